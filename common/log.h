// Structured log records. Under systemd (stderr is the journal stream named
// by $JOURNAL_STREAM) each record goes to the journal with its fields, so
// `journalctl -u tameflared DECISION=deny` selects; otherwise one plain line
// on stderr: "level: message KEY=value ...".
//
// Records at notice and above are written before log() returns. info and
// debug records, and every log_queued() record (one per proxied request),
// are queued and written by a background thread, so a slow journal never
// stalls the proxy; when the queue is full they are dropped and counted, and
// the count is logged.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <utility>

namespace tameflare {

enum class LogLevel { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

// Field names are upper case (A-Z, 0-9, _), as the journal requires.
using LogField = std::pair<std::string_view, std::string_view>;

// MESSAGE_ID values (journalctl MESSAGE_ID=...), one per kind of event.
// Listed in docs/operations.md; never change one once released.
namespace message_id {
inline constexpr std::string_view started = "72c69744ea3441378b431dbe5ea36e53";
inline constexpr std::string_view stopping = "9386ab1cee5540e1aef091073bb06d27";
inline constexpr std::string_view reloaded = "889737d9d1484f7caaa72ed3ec30f279";
inline constexpr std::string_view config_error = "e7edb26e4e844828a233a5f643bbcc32";
inline constexpr std::string_view decision = "55fee1e3861b479181c581224a17fe36";
inline constexpr std::string_view agent_started = "b1d80c322248463ca7544cc6e1eb8f92";
inline constexpr std::string_view agent_exited = "181d5c0172cd4544a05795753351b226";
inline constexpr std::string_view kill_switch = "91417569cb534af3b471b304d7545047";
inline constexpr std::string_view approval = "7e3911586391419ca5d3809f63cf0a03";
inline constexpr std::string_view records_dropped = "0ee0b904e2cd4f9b9397b461ca287fe2";
}  // namespace message_id

void log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});

// A record of the proxy's hot path (one per request): queued whatever its
// level, never waits for the output.
void log_queued(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});

// Writes every queued record (before exit, before a test reads the output).
void flush_log();

// Records not logged because the queue was full, since the start.
std::uint64_t dropped_log_records();

// Whether records go to the journal (decided once, from $JOURNAL_STREAM).
bool logging_to_journal();

}  // namespace tameflare
