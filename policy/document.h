// A configuration document handed to the policy layer. The policy layer does
// no I/O: the daemon reads files and passes their names and bytes here.
#pragma once

#include <string>

namespace tameflare::policy {

struct Document {
    std::string origin;  // file path, shown in errors
    std::string text;    // the JSON text
};

}  // namespace tameflare::policy
