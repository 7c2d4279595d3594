// What an agent's environment gains from its gateway's connectors: a
// placeholder in each variable a service's SDK reads its key from (the proxy
// puts the vault's credential on the wire), and git configuration that sends
// SSH remotes of the connectors' hosts over HTTPS, through the proxy.
#pragma once

#include "policy/gateway.h"

#include <string>
#include <string_view>
#include <vector>

namespace tameflare::daemon {

// The value agents find in a connector's credential variables: recognisable,
// and never a secret. "tameflare-placeholder-<connector instance>".
std::string credential_placeholder(std::string_view instance);

// Adds to `env` (NAME=value entries) the placeholders of every connector
// instance of `gateway` that has a vault credential, replacing any value the
// caller passed, and GIT_CONFIG_COUNT/KEY_n/VALUE_n entries (after the
// caller's own, if any) that rewrite git@HOST: and ssh://git@HOST/ to
// https://HOST/ for each host an instance serves and its connector lists in
// ssh_remotes.
void add_connector_environment(const policy::Gateway& gateway, std::vector<std::string>& env);

// Points JVMs at the Java trust store `store` (the CA bundle as PKCS#12):
// JAVA_TOOL_OPTIONS gets the trust store properties after whatever the
// caller had in it (a later -D wins, so ours do).
void add_java_trust(std::vector<std::string>& env, const std::string& store);

}  // namespace tameflare::daemon
