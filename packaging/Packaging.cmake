# The Debian package (CPack DEB) and the files it ships in /etc/tameflare.
# Included at the end of the top-level CMakeLists.txt. docs/packaging.md.
#
#   cpack --config build/CPackConfig.cmake -B build/package   # or: ninja -C build package
#
# The package is laid out for prefix /usr whatever CMAKE_INSTALL_PREFIX the
# tree was configured with (CPACK_SET_DESTDIR with CPACK_INSTALL_PREFIX /usr),
# so the tree build.sh configures can build it. Install rules must therefore
# use relative destinations (bin, lib/systemd/system, ${CMAKE_INSTALL_DATADIR}),
# never CMAKE_INSTALL_FULL_* or an absolute path computed at configure time;
# the staging check below refuses a package with anything under /usr/local.

# --- /etc/tameflare -----------------------------------------------------------
# One minimal, commented gateway (packaging/gateways.d); the example gateways
# go to the documentation (below), not live. Both without the explicit-proxy
# token hash: the example token is published in the README, so a shipped hash
# would let any local user select the gateway on the explicit proxy.
set(TF_PACKAGE_ETC_STAGE "${PROJECT_BINARY_DIR}/packaging/etc")
set(TF_PACKAGE_EXAMPLES_STAGE "${PROJECT_BINARY_DIR}/packaging/examples/gateways")
file(REMOVE_RECURSE "${TF_PACKAGE_ETC_STAGE}" "${TF_PACKAGE_EXAMPLES_STAGE}")
file(MAKE_DIRECTORY "${TF_PACKAGE_ETC_STAGE}/gateways.d" "${TF_PACKAGE_ETC_STAGE}/connectors.d"
     "${TF_PACKAGE_EXAMPLES_STAGE}")
configure_file("${PROJECT_SOURCE_DIR}/packaging/tameflared.json" "${TF_PACKAGE_ETC_STAGE}/tameflared.json" COPYONLY)
set(TF_PACKAGE_CONFFILES "/etc/tameflare/tameflared.json")
function(tf_stage_gateway source destination)
  set_property(DIRECTORY "${PROJECT_SOURCE_DIR}" APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${source}")
  file(READ "${source}" text)
  string(REGEX REPLACE "\n[ \t]*\"proxy_token_sha256\"[ \t]*:[ \t]*\"[0-9a-f]*\"[ \t]*," "" text "${text}")
  if(text MATCHES "proxy_token_sha256")
    message(FATAL_ERROR "packaging: cannot strip proxy_token_sha256 from ${source}; keep it on its own line")
  endif()
  file(WRITE "${destination}" "${text}")
endfunction()
file(GLOB TF_PACKAGE_GATEWAYS CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/packaging/gateways.d/*.json")
list(SORT TF_PACKAGE_GATEWAYS)
foreach(gateway IN LISTS TF_PACKAGE_GATEWAYS)
  get_filename_component(name "${gateway}" NAME)
  tf_stage_gateway("${gateway}" "${TF_PACKAGE_ETC_STAGE}/gateways.d/${name}")
  list(APPEND TF_PACKAGE_CONFFILES "/etc/tameflare/gateways.d/${name}")
endforeach()
file(GLOB TF_PACKAGE_EXAMPLE_GATEWAYS CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/examples/gateways.d/*.json")
list(SORT TF_PACKAGE_EXAMPLE_GATEWAYS)
foreach(gateway IN LISTS TF_PACKAGE_EXAMPLE_GATEWAYS)
  get_filename_component(name "${gateway}" NAME)
  tf_stage_gateway("${gateway}" "${TF_PACKAGE_EXAMPLES_STAGE}/${name}")
endforeach()
install(DIRECTORY "${TF_PACKAGE_EXAMPLES_STAGE}/" DESTINATION "${CMAKE_INSTALL_DOCDIR}/examples/gateways"
        FILES_MATCHING PATTERN "*.json")

# /etc for prefix /usr (and /), <prefix>/etc otherwise, decided at install
# time (as GNUInstallDirs decides CMAKE_INSTALL_FULL_SYSCONFDIR), so that
# `cmake --install build --prefix /usr` and the package put it in /etc.
string(CONFIGURE [[
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr" OR CMAKE_INSTALL_PREFIX STREQUAL "/")
    set(tf_etc "/etc/tameflare")
  else()
    set(tf_etc "${CMAKE_INSTALL_PREFIX}/etc/tameflare")
  endif()
  file(INSTALL DESTINATION "${tf_etc}" TYPE DIRECTORY FILES "@TF_PACKAGE_ETC_STAGE@/"
       DIR_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
]] TF_PACKAGE_ETC_INSTALL @ONLY)
install(CODE "${TF_PACKAGE_ETC_INSTALL}")

# The documentation the units point at (file:/usr/share/doc/tameflare/README.md,
# .../docs/api.md).
install(FILES README.md DESTINATION "${CMAKE_INSTALL_DOCDIR}")
install(DIRECTORY docs/ DESTINATION "${CMAKE_INSTALL_DOCDIR}/docs" FILES_MATCHING PATTERN "*.md")

# --- the .deb -----------------------------------------------------------------
set(TF_PACKAGE_MAINTAINER "TameFlare for Linux maintainers <packaging@tameflare.invalid>"
    CACHE STRING "Maintainer field of the Debian package")
set(TF_PACKAGE_RELEASE "1" CACHE STRING "Debian revision of the package (the part after the dash)")

set(TF_PACKAGE_CONTROL "${PROJECT_BINARY_DIR}/packaging/control")
file(MAKE_DIRECTORY "${TF_PACKAGE_CONTROL}")
list(JOIN TF_PACKAGE_CONFFILES "\n" conffiles)
file(WRITE "${TF_PACKAGE_CONTROL}/conffiles" "${conffiles}\n")
foreach(script postinst prerm postrm)
  configure_file("${PROJECT_SOURCE_DIR}/packaging/debian/${script}" "${TF_PACKAGE_CONTROL}/${script}" COPYONLY)
endforeach()
configure_file("${PROJECT_SOURCE_DIR}/packaging/check-staging.cmake" "${TF_PACKAGE_CONTROL}/check-staging.cmake" COPYONLY)

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "tameflare")
set(CPACK_PACKAGE_VENDOR "TameFlare for Linux")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "${TF_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "kernel-enforced policy proxy for the network egress of AI agents")
set(CPACK_PACKAGE_DIRECTORY "${PROJECT_BINARY_DIR}/package")
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX "/usr")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)
set(CPACK_PRE_BUILD_SCRIPTS "${TF_PACKAGE_CONTROL}/check-staging.cmake")

set(CPACK_DEBIAN_PACKAGE_NAME "tameflare")
set(CPACK_DEBIAN_FILE_NAME "DEB-DEFAULT")  # tameflare_<version>-<release>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE "${TF_PACKAGE_RELEASE}")
set(CPACK_DEBIAN_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${TF_PACKAGE_MAINTAINER}")
# The libraries come from dpkg-shlibdeps (dpkg-dev, installed with
# build-essential); the rest is what the maintainer scripts and the service
# need at run time: systemd (systemd-sysusers, systemd-tmpfiles, the units)
# and the system bus for com.tameflare.Daemon1.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd, dbus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  "${TF_PACKAGE_CONTROL}/conffiles;${TF_PACKAGE_CONTROL}/postinst;${TF_PACKAGE_CONTROL}/prerm;${TF_PACKAGE_CONTROL}/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# CPack puts CPACK_PACKAGE_DESCRIPTION_SUMMARY on the Description line; this is the long part.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
  "tameflared lets a shared Linux host run untrusted AI agents (coding agents,
CI jobs, LLM tool users) while every connection they open goes through a
policy proxy they cannot route around: eBPF programs on the agents' cgroup
redirect every TCP connect to the proxy, refuse other UDP than DNS and raw
sockets. Each HTTP request becomes an action (github.pr.merge) that is
allowed, denied or held for a human, with credentials injected from an
encrypted vault and every decision kept in a hash-chained audit log.
.
The package ships the daemon tameflared, the command-line tool tf, the
connector definitions, the systemd units and the D-Bus service
com.tameflare.Daemon1. The service is not started on installation: put
credentials in the vault, adapt /etc/tameflare/gateways.d, then
systemctl enable --now tameflared.")

# `ninja package_source`: the sources without build trees and VCS data.
set(CPACK_SOURCE_GENERATOR "TXZ")
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/\\\\.cache/")

include(CPack)
