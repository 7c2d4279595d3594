# CPACK_PRE_BUILD_SCRIPTS: runs on the staged tree before the .deb is made.
# Refuses files outside the FHS places this package may use (a rule with an
# absolute destination computed from a /usr/local prefix, say).
file(GLOB_RECURSE staged LIST_DIRECTORIES false RELATIVE "${CPACK_TEMPORARY_DIRECTORY}" "${CPACK_TEMPORARY_DIRECTORY}/*")
set(misplaced "")
foreach(file IN LISTS staged)
  if(NOT file MATCHES "^(usr/(bin|sbin|lib|libexec|share)|etc/tameflare)/")
    list(APPEND misplaced "/${file}")
  endif()
endforeach()
if(misplaced)
  list(JOIN misplaced "\n  " text)
  message(FATAL_ERROR "packaging: files outside /usr/{bin,sbin,lib,libexec,share} and /etc/tameflare:\n  ${text}\n"
                      "(install rules must use relative destinations; see packaging/Packaging.cmake)")
endif()
list(LENGTH staged count)
message(STATUS "packaging: ${count} files staged, all in FHS places")
