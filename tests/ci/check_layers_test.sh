#!/bin/sh
# .ci/check-layers on a small repository of its own: the allowed edge passes,
# an include the table does not allow fails naming the file and line, and an
# edge the table allows but nobody uses fails too.
set -eu
script=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
git init -q .
mkdir -p docs policy netns
cat > docs/architecture.md <<'TABLE'
<!-- layers:begin -->
| part | may include |
|---|---|
| `netns` | `policy` (the reason) |
<!-- layers:end -->
TABLE
printf '#pragma once\n' > policy/a.h
printf '#include "policy/a.h"\n' > netns/b.h
git add -A
"$script" "$work" > out 2>&1 || { cat out; echo "FAIL: the allowed edge was refused"; exit 1; }
printf '#include "netns/b.h"\n' > policy/c.h
git add -A
if "$script" "$work" > out 2>&1; then cat out; echo "FAIL: policy -> netns was let through"; exit 1; fi
grep -q 'policy/c.h:1: policy includes netns, which the layer table does not allow' out || { cat out; exit 1; }
git rm -q -f policy/c.h netns/b.h
if "$script" "$work" > out 2>&1; then cat out; echo "FAIL: a stale edge was let through"; exit 1; fi
grep -q 'allows netns -> policy, which no file uses' out || { cat out; exit 1; }
echo "check-layers: refuses what it must"
