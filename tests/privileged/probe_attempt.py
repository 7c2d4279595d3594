"""The probes' one way to report: each attempt prints "name=result", where
result is what the attempt returned, "errno:NAME" for an OSError, or
"error:Type" for anything else (a probe reports, it never crashes)."""
import errno


def attempt(name, fn):
    try:
        result = fn()
    except OSError as error:
        result = "errno:" + errno.errorcode.get(error.errno, str(error.errno))
    except Exception as error:  # noqa: BLE001 - report, never crash the probe
        result = "error:" + type(error).__name__
    print(f"{name}={result}", flush=True)
