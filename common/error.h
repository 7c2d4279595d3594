// The error base for what a user can cause: a message saying what went
// wrong and where, and a hint saying how to fix it (may be empty). Front ends
// print both; the REST API and D-Bus carry the hint as a field of their own.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace tameflare {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, std::string hint = {})
        : std::runtime_error(message), hint_(std::move(hint)) {}
    [[nodiscard]] const std::string& hint() const noexcept { return hint_; }

private:
    std::string hint_;
};

}  // namespace tameflare
