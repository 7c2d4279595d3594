// What tf prints: text from the daemon made safe for a terminal, colour,
// tables, bodies passed through, JSON. Agents choose hosts, paths and
// parameters, so nothing they wrote reaches the terminal unescaped. (The
// daemon's JSON answers are read into types in cli/api_model.h.)
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::cli {

// Control characters (C0, DEL, C1) and bytes that are not UTF-8 become \xNN,
// and bidirectional overrides \u{NNNN}, so a value can neither send escape
// sequences nor reorder what is shown around it.
std::string printable(std::string_view text);

// Colour only when standard output is a terminal and NO_COLOR is unset or empty.
enum class Colour { none, red, green, yellow, bold, dim };
std::string paint(const std::string& text, Colour colour);

// A body passed through as the daemon sent it (CSV, JSON Lines, Prometheus
// text): to a pipe unchanged, to a terminal a line at a time with control
// characters escaped. Also a stream buffer, for an std::ostream over it.
// Flushes what is left when it goes.
class RawOutput : public std::streambuf {
public:
    RawOutput();
    RawOutput(const RawOutput&) = delete;
    RawOutput& operator=(const RawOutput&) = delete;
    ~RawOutput() override;
    void write(std::string_view piece);

protected:
    int_type overflow(int_type c) override;
    std::streamsize xsputn(const char* text, std::streamsize count) override;
    int sync() override;

private:
    bool terminal_;
    std::string line_;
};

struct Cell {
    std::string text;  // as the daemon sent it; escaped when printed
    Colour colour = Colour::none;
};

// Columns as wide as their widest cell (capped), two spaces apart; an empty
// cell shows as "-".
class Table {
public:
    struct Column {
        std::string name;
        std::size_t max_width = 32;  // 0: never cut (identifiers a user types back)
    };
    explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

    void add(std::vector<Cell> row);
    void print() const;

private:
    void pad(std::string& line, const std::string& text, Colour colour, const std::vector<std::size_t>& widths,
             std::size_t i) const;

    std::vector<Column> columns_;
    std::vector<std::vector<Cell>> rows_;
};

// {"a", "b"} as "a, b".
std::string joined(const std::vector<std::string>& list);
// JSON text; bytes that are not UTF-8 replaced, never an exception.
std::string dump(const nlohmann::json& document, int indent = -1);
// The document on standard output, indented.
void print_json(const nlohmann::json& document);

// "  label                value", the value escaped ("-" when empty).
void field(const std::string& label, const std::string& value, Colour colour = Colour::none);
// 42s, 3m 5s, 2h 10m, 1d 4h.
std::string duration(long long seconds);

}  // namespace tameflare::cli
