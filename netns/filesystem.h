// A gateway's filesystem rules (policy/filesystem.h) made concrete for one
// agent: '~' and relative entries made absolute, globs expanded in the
// launching user's view of the machine, and the Landlock write ruleset that
// goes with them. spawn() turns the result into mounts (SpawnOptions).
#pragma once

#include "netns/landlock.h"
#include "policy/filesystem.h"

#include <string>
#include <vector>

namespace tameflare::netns {

struct FilesystemView {
    std::vector<std::string> write;        // absolute; may not exist (Landlock skips those)
    std::vector<std::string> pins;         // directories between a write root and a protected path, outer first
    std::vector<std::string> protect;      // absolute, each inside a write root
    std::vector<std::string> hide;         // absolute
    std::vector<std::string> private_tmp;  // "/tmp", "/var/tmp" when the agent gets its own
    // What was left out and why, for the journal and tf run ("the working
    // directory /home/ann holds the home directory: it stays read-only").
    std::vector<std::string> notes;
};

struct FilesystemInputs {
    policy::PathContext paths;  // the home '~' means, and the working directory
    // Further homes whose '~' hide entries are hidden too (the user database's
    // home of the launching user, when $HOME says another).
    std::vector<std::string> other_homes;
    // Where the launching user's root is, to expand globs in their view
    // ("/proc/PID/root" when their mount namespace is not the daemon's; "" for "/").
    std::string lookup_root;
};

// At most this many paths per list come out of globs; the rest are left out with a note.
constexpr std::size_t kMaxGlobMatches = 256;

FilesystemView resolve_filesystem(const policy::FilesystemRules& rules, const FilesystemInputs& inputs);

// The Landlock write ruleset for `view`: every write right is governed; the
// write roots and private tmp directories get them all, /dev what terminals
// and /dev/null need, /dev/shm all. Reading and executing stay with the
// kernel's permissions.
LandlockPolicy write_ruleset(const FilesystemView& view);

}  // namespace tameflare::netns
