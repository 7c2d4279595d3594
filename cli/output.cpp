#include "cli/output.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>

namespace tameflare::cli {

namespace {

using nlohmann::json;

bool colour_enabled() {
    // https://no-color.org: a NO_COLOR that is set and not empty turns colour off.
    static const bool enabled = [] {
        const char* no_color = std::getenv("NO_COLOR");
        return ::isatty(STDOUT_FILENO) == 1 && (no_color == nullptr || *no_color == '\0');
    }();
    return enabled;
}

void append_hex(std::string& out, unsigned char byte) {
    static constexpr char kDigits[] = "0123456789abcdef";
    out += "\\x";
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xf];
}

// Characters shown (UTF-8 lead bytes); wide characters count as one.
std::size_t columns(std::string_view text) {
    return static_cast<std::size_t>(
        std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
}

// At most `width` characters, a cut marked with "..".
std::string cut(const std::string& text, std::size_t width) {
    if (width == 0 || columns(text) <= width) return text;
    std::string out;
    std::size_t shown = 0;
    for (std::size_t at = 0; at < text.size(); ++at) {
        const bool lead = (static_cast<unsigned char>(text[at]) & 0xc0) != 0x80;
        if (lead && ++shown > width - 2) break;
        out += text[at];
    }
    return out + "..";
}

std::string trimmed(std::string line) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line;
}

}  // namespace

std::string paint(const std::string& text, Colour colour) {
    if (colour == Colour::none || !colour_enabled()) return text;
    const char* code = "";
    switch (colour) {
        case Colour::red: code = "\x1b[31m"; break;
        case Colour::green: code = "\x1b[32m"; break;
        case Colour::yellow: code = "\x1b[33m"; break;
        case Colour::bold: code = "\x1b[1m"; break;
        case Colour::dim: code = "\x1b[2m"; break;
        case Colour::none: break;
    }
    return code + text + "\x1b[0m";
}

std::string printable(std::string_view text) {
    std::string out;
    for (std::size_t at = 0; at < text.size();) {
        const auto lead = static_cast<unsigned char>(text[at]);
        std::size_t length = 0;
        char32_t code = 0;
        if (lead < 0x80) {
            length = 1;
            code = lead;
        } else if ((lead & 0xe0) == 0xc0) {
            length = 2;
            code = lead & 0x1fU;
        } else if ((lead & 0xf0) == 0xe0) {
            length = 3;
            code = lead & 0x0fU;
        } else if ((lead & 0xf8) == 0xf0) {
            length = 4;
            code = lead & 0x07U;
        }
        bool valid = length != 0 && at + length <= text.size();
        for (std::size_t i = 1; valid && i < length; ++i) {
            const auto next = static_cast<unsigned char>(text[at + i]);
            valid = (next & 0xc0) == 0x80;
            code = (code << 6) | (next & 0x3fU);
        }
        static constexpr std::array<char32_t, 5> kMinimum{0, 0, 0x80, 0x800, 0x10000};
        valid = valid && code >= kMinimum[length] && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff);
        if (!valid) {
            append_hex(out, lead);
            ++at;
            continue;
        }
        if (code < 0x20 || (code >= 0x7f && code < 0xa0)) {
            for (std::size_t i = 0; i < length; ++i) append_hex(out, static_cast<unsigned char>(text[at + i]));
        } else if ((code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069) || code == 0x200e ||
                   code == 0x200f) {
            std::array<char, 16> escaped{};
            std::snprintf(escaped.data(), escaped.size(), "\\u{%04x}", static_cast<unsigned>(code));
            out += escaped.data();
        } else {
            out.append(text.substr(at, length));
        }
        at += length;
    }
    return out;
}

// ---------------------------------------------------------------------------

RawOutput::RawOutput() : terminal_(::isatty(STDOUT_FILENO) == 1) {}

RawOutput::~RawOutput() {
    if (!line_.empty()) std::puts(printable(line_).c_str());
    std::fflush(stdout);
}

void RawOutput::write(std::string_view piece) {
    if (!terminal_) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        return;
    }
    for (const char c : piece) {
        if (c != '\n') {
            line_ += c;
            continue;
        }
        if (line_.ends_with('\r')) line_.pop_back();
        std::puts(printable(line_).c_str());
        line_.clear();
    }
}

RawOutput::int_type RawOutput::overflow(int_type c) {
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
        const char one = traits_type::to_char_type(c);
        write(std::string_view(&one, 1));
    }
    return traits_type::not_eof(c);
}

std::streamsize RawOutput::xsputn(const char* text, std::streamsize count) {
    write(std::string_view(text, static_cast<std::size_t>(count)));
    return count;
}

int RawOutput::sync() {
    return std::fflush(stdout) == 0 ? 0 : -1;
}

// ---------------------------------------------------------------------------

void Table::add(std::vector<Cell> row) {
    for (auto& cell : row) cell.text = printable(cell.text.empty() ? "-" : cell.text);
    rows_.push_back(std::move(row));
}

void Table::print() const {
    std::vector<std::size_t> widths;
    widths.reserve(columns_.size());
    for (const auto& column : columns_) widths.push_back(column.name.size());
    for (const auto& row : rows_) {
        for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
            const auto max = columns_[i].max_width;
            widths[i] = std::max(widths[i], max == 0 ? columns(row[i].text) : std::min(max, columns(row[i].text)));
        }
    }
    std::string header;
    for (std::size_t i = 0; i < columns_.size(); ++i) pad(header, columns_[i].name, Colour::bold, widths, i);
    std::puts(trimmed(header).c_str());
    for (const auto& row : rows_) {
        std::string line;
        for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
            pad(line, cut(row[i].text, columns_[i].max_width), row[i].colour, widths, i);
        }
        std::puts(trimmed(line).c_str());
    }
}

void Table::pad(std::string& line, const std::string& text, Colour colour, const std::vector<std::size_t>& widths,
                std::size_t i) const {
    line += paint(text, colour);
    if (i + 1 < columns_.size()) line.append(widths[i] - std::min(widths[i], columns(text)) + 2, ' ');
}

// ---------------------------------------------------------------------------

std::string joined(const std::vector<std::string>& list) {
    std::string out;
    for (const auto& item : list) {
        if (!out.empty()) out += ", ";
        out += item;
    }
    return out;
}

std::string dump(const json& document, int indent) {
    return document.dump(indent, ' ', false, json::error_handler_t::replace);
}

void print_json(const json& document) {
    std::puts(dump(document, 2).c_str());
}

void field(const std::string& label, const std::string& value, Colour colour) {
    std::printf("  %-20s %s\n", label.c_str(), paint(printable(value.empty() ? "-" : value), colour).c_str());
}

std::string duration(long long seconds) {
    seconds = std::max(seconds, 0LL);
    const auto two = [](long long big, const char* big_unit, long long small, const char* small_unit) {
        std::string out = std::to_string(big) + big_unit;
        if (small != 0) out += " " + std::to_string(small) + small_unit;
        return out;
    };
    if (seconds < 60) return std::to_string(seconds) + "s";
    if (seconds < 3600) return two(seconds / 60, "m", seconds % 60, "s");
    if (seconds < 86400) return two(seconds / 3600, "h", seconds % 3600 / 60, "m");
    return two(seconds / 86400, "d", seconds % 86400 / 3600, "h");
}

}  // namespace tameflare::cli
