// A gateway's `filesystem` section: where its agents may write, what stays
// read-only inside those places, and what they must not see. Entries are
// absolute paths ("/srv/cache"), paths under the launching user's home
// ("~/.cache") or paths relative to the working directory the agent was
// launched in ("." itself, ".git/hooks"); a component may hold the globs '*'
// and '?'. Pure logic: the daemon turns them into mounts and a Landlock
// ruleset (netns/filesystem.h).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tameflare::policy {

struct FilesystemRules {
    // Where the agent may create, change and remove files; everything else
    // is read-only to it (a Landlock write ruleset).
    std::vector<std::string> write;
    // Paths inside the writable places that stay read-only, because writing
    // them runs code later (read-only bind mounts).
    std::vector<std::string> protect;
    // Paths whose contents the agent must not see (an empty read-only tmpfs
    // over a directory, /dev/null over a file).
    std::vector<std::string> hide;
    // A /tmp and /var/tmp of the agent's own (a tmpfs each).
    bool private_tmp = true;
};

// The defaults, suited to a coding agent: its working directory and the
// package managers' and compilers' caches are writable; git's hooks and
// configuration, editors' task files and the shell's start-up files are
// protected; keys, cloud and registry credentials, password stores and
// browser profiles are hidden (docs/enforcement.md lists them).
const FilesystemRules& default_filesystem();

// "" when `entry` is a valid filesystem entry, else what is wrong with it.
std::string filesystem_entry_error(std::string_view entry);

// What a gateway's lists become: the defaults, plus each entry given, less
// each default named as "!entry". Returns "" or what is wrong with
// `given[index]` (index set), e.g. a "!" entry that is no default.
std::string merge_filesystem_list(const std::vector<std::string>& defaults, const std::vector<std::string>& given,
                                  std::vector<std::string>& out, std::size_t& index);

// Where an agent's relative and '~' entries point: the launching user's home
// directory and the agent's working directory, both absolute.
struct PathContext {
    std::string home;
    std::string workdir;
};

// `entry` as an absolute path pattern: "~" replaced by the home, a relative
// entry put under the working directory, "." and a trailing '/' dropped.
// The globs of the home and working directory paths themselves are kept
// apart: `literal_prefix` is how many leading characters are literal.
std::string absolute_pattern(std::string_view entry, const PathContext& context, std::size_t* literal_prefix = nullptr);

// Whether `path` is `root` or lies beneath it, comparing whole components
// ("/a/bc" is not beneath "/a/b"). Both absolute and normal.
bool path_within(std::string_view path, std::string_view root) noexcept;

}  // namespace tameflare::policy
