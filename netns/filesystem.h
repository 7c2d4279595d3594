// A gateway's filesystem rules (policy/filesystem.h) made concrete for one
// agent: '~' and relative entries made absolute, globs expanded in the
// launching user's view of the machine, and the Landlock write ruleset that
// goes with them. spawn() turns the result into mounts (SpawnOptions).
#pragma once

#include "common/unique_fd.h"
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
    // Protected paths inside a write root that did not exist at launch, but
    // whose directory did: no mount can hold them, so a ProtectedNameGuard
    // moves aside whatever the agent creates there.
    struct Absent {
        std::string directory;
        std::string name;
    };
    std::vector<Absent> absent;
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

// Watches the directories of a view's absent protected names (inotify) and
// moves aside, in the same directory, whatever appears under those names:
// ".git/commondir" becomes ".git/commondir.tameflare-<tag>-<16 random hex
// digits>", never replacing anything. Not a kernel guarantee: between the
// agent's create and the move there is a moment. The last sweep, once the
// agent's processes are gone, leaves nothing behind.
class ProtectedNameGuard {
public:
    // The directories are opened now, under `lookup_root` (as FilesystemInputs);
    // one that cannot be opened is skipped.
    ProtectedNameGuard(const std::vector<FilesystemView::Absent>& absent, const std::string& lookup_root,
                       std::string tag);
    // Readable when something was created in a watched directory; -1 when
    // nothing is watched.
    [[nodiscard]] int fd() const { return inotify_.get(); }
    [[nodiscard]] bool empty() const { return names_.empty(); }
    // Drains the pending events and moves aside every protected name that
    // exists now: "<directory>/<name> -> <new name>" for each.
    std::vector<std::string> sweep();

private:
    struct Watched {
        std::string directory;
        UniqueFd fd;
        std::string name;
    };
    UniqueFd inotify_;
    std::vector<Watched> names_;
    std::string tag_;
};

}  // namespace tameflare::netns
