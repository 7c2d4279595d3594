// netns/'s one error type (internal): a system_error whose message reads
// "<what failed>: <strerror>; <how to fix>".
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace tameflare::netns::detail {

class Error : public std::system_error {
public:
    Error(int err, std::string text) : std::system_error(err, std::generic_category()), text_(std::move(text)) {}
    [[nodiscard]] const char* what() const noexcept override { return text_.c_str(); }

private:
    std::string text_;
};

[[noreturn]] inline void fail(int err, const std::string& what, std::string_view fix = {}) {
    std::string text = what + ": " + std::generic_category().message(err);
    if (!fix.empty()) text.append("; ").append(fix);
    throw Error(err, std::move(text));
}

}  // namespace tameflare::netns::detail
