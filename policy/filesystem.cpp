#include "policy/filesystem.h"

#include <algorithm>

namespace tameflare::policy {

const FilesystemRules& default_filesystem() {
    static const FilesystemRules rules{
        .write =
            {
                ".",
                // Caches of package managers and compilers.
                "~/.cache",
                "~/.npm",
                "~/.yarn/berry/cache",
                "~/.local/share/pnpm/store",
                "~/.cargo/registry",
                "~/.cargo/git",
                "~/.m2/repository",
                "~/.gradle/caches",
                "~/.gradle/wrapper",
                "~/go/pkg/mod",
                "~/.ccache",
                "~/.nuget/packages",
            },
        .protect =
            {
                // In the working directory: what git, direnv and editors run.
                ".git/hooks",
                ".git/config",
                // Where git finds other configuration and hooks for this repository, its submodules and its
                // linked worktrees.
                ".git/commondir",
                ".git/modules/*/config",
                ".git/modules/*/hooks",
                ".git/worktrees/*/commondir",
                ".git/worktrees/*/config.worktree",
                ".gitmodules",
                ".envrc",
                ".vscode",
                ".idea",
                // In the home directory, should a gateway make it writable.
                "~/.bashrc",
                "~/.bash_profile",
                "~/.bash_login",
                "~/.bash_logout",
                "~/.profile",
                "~/.zshrc",
                "~/.zshenv",
                "~/.zprofile",
                "~/.zlogin",
                "~/.config/fish",
                "~/.config/systemd",
                "~/.config/autostart",
                "~/.config/environment.d",
                "~/.config/git",
                "~/.gitconfig",
                "~/.local/bin",
                "~/.local/share/systemd",
                "~/.ssh",
                "~/.pam_environment",
                "~/.xprofile",
                "~/.xsessionrc",
            },
        .hide =
            {
                "~/.ssh",
                "~/.gnupg",
                "~/.password-store",
                "~/.aws",
                "~/.azure",
                "~/.config/gcloud",
                "~/.kube",
                "~/.docker",
                "~/.netrc",
                "~/.git-credentials",
                "~/.config/git/credentials",
                "~/.config/gh",
                "~/.config/hub",
                "~/.npmrc",
                "~/.pypirc",
                "~/.cargo/credentials",
                "~/.cargo/credentials.toml",
                "~/.gem/credentials",
                "~/.m2/settings.xml",
                "~/.pgpass",
                "~/.vault-token",
                "~/.terraform.d/credentials.tfrc.json",
                "~/.local/share/keyrings",
                "~/.mozilla",
                "~/.config/google-chrome",
                "~/.config/chromium",
                "~/.config/BraveSoftware",
                "~/.config/tameflare",
            },
        .private_tmp = true,
    };
    return rules;
}

std::string filesystem_entry_error(std::string_view entry) {
    if (entry.empty()) return "it is empty";
    if (entry.find('\0') != std::string_view::npos) return "a NUL byte";
    if (entry.size() > 4096) return "longer than a path may be";
    if (entry.starts_with("~") && !(entry == "~" || entry.starts_with("~/"))) {
        return "'~user' is not supported; '~' is the launching user's home";
    }
    std::string_view rest = entry;
    if (rest.starts_with("~")) rest.remove_prefix(1);
    if (rest.find("//") != std::string_view::npos) return "an empty path component";
    std::size_t at = 0;
    while (at <= rest.size()) {
        const std::size_t end = std::min(rest.find('/', at), rest.size());
        const std::string_view component = rest.substr(at, end - at);
        if (component == "..") return "a '..' component";
        if (component == "." && !(entry == "." || entry == "./")) return "a '.' component";
        if (component.find("**") != std::string_view::npos) return "'**' is not supported; '*' matches one component";
        if (component.find_first_of("[]{}") != std::string_view::npos) {
            return "'[', ']', '{' and '}' are not supported; the globs are '*' and '?'";
        }
        at = end + 1;
    }
    if (entry == "/") return "the whole file system";
    return {};
}

std::string merge_filesystem_list(const std::vector<std::string>& defaults, const std::vector<std::string>& given,
                                  std::vector<std::string>& out, std::size_t& index) {
    out = defaults;
    for (index = 0; index < given.size(); ++index) {
        const std::string& entry = given[index];
        if (entry.starts_with("!")) {
            const auto found = std::find(out.begin(), out.end(), entry.substr(1));
            if (found == out.end())
                return "\"" + entry.substr(1) + "\" is not a default entry, so it cannot be removed";
            out.erase(found);
            continue;
        }
        if (std::string problem = filesystem_entry_error(entry); !problem.empty()) return problem;
        if (std::find(out.begin(), out.end(), entry) == out.end()) out.push_back(entry);
    }
    return {};
}

std::string absolute_pattern(std::string_view entry, const PathContext& context, std::size_t* literal_prefix) {
    std::string base;
    std::string_view rest = entry;
    if (rest.starts_with("~")) {
        base = context.home;
        rest.remove_prefix(1);
    } else if (!rest.starts_with("/")) {
        base = context.workdir;
        if (rest == "." || rest == "./") rest = {};
    }
    while (rest.starts_with("/") && !base.empty()) rest.remove_prefix(1);
    while (base.size() > 1 && base.ends_with("/")) base.pop_back();
    if (literal_prefix != nullptr) *literal_prefix = base.size();
    std::string path = base;
    if (!rest.empty()) {
        if (!path.empty() && !path.ends_with("/")) path += "/";
        path += rest;
    }
    while (path.size() > 1 && path.ends_with("/")) path.pop_back();
    return path;
}

bool path_within(std::string_view path, std::string_view root) noexcept {
    if (root == "/") return path.starts_with("/");
    if (!path.starts_with(root)) return false;
    return path.size() == root.size() || path[root.size()] == '/';
}

}  // namespace tameflare::policy
