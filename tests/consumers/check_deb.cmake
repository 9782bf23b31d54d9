# Checks the .deb written by cpack and unpacks it into a scratch root (dpkg -x), where the
# deb consumer project then finds ddpm.
#   cmake -DDEB_DIR=<cpack's output> -DVERSION=<project version> -DROOT=<scratch root>
#         -DDEPENDS=<pkg|pkg|...> -P check_deb.cmake
set(_name "libddpm-dev_${VERSION}_all.deb")
set(_deb "${DEB_DIR}/${_name}")
if(NOT EXISTS "${_deb}")
  file(GLOB _debs RELATIVE "${DEB_DIR}" "${DEB_DIR}/*.deb")
  message(FATAL_ERROR "cpack wrote no ${_name} in ${DEB_DIR} (found: '${_debs}')")
endif()

macro(_check what)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${_rc})")
  endif()
endmacro()

find_program(DPKG_DEB dpkg-deb)
if(NOT DPKG_DEB)
  message(FATAL_ERROR "dpkg-deb not found")
endif()
execute_process(COMMAND ${DPKG_DEB} --info "${_deb}" OUTPUT_VARIABLE _info RESULT_VARIABLE _rc)
_check("dpkg-deb --info")
message("${_info}")
foreach(_field "Package: libddpm-dev" "Version: ${VERSION}" "Architecture: all")
  string(FIND "${_info}" " ${_field}\n" _at)
  if(_at EQUAL -1)
    message(FATAL_ERROR "${_name}: no '${_field}' in its control file")
  endif()
endforeach()
execute_process(COMMAND ${DPKG_DEB} --field "${_deb}" Depends OUTPUT_VARIABLE _depends
                OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
_check("dpkg-deb --field")
# Each dependency is named, and is a real Debian package (installed on this machine: the
# same ones ddpm's own build used).
string(REPLACE "|" ";" _wanted "${DEPENDS}")
find_program(DPKG_QUERY dpkg-query)
foreach(_pkg IN LISTS _wanted)
  if(NOT _depends MATCHES "(^|, )${_pkg}( \\(|,|$)")
    message(FATAL_ERROR "${_name}: Depends '${_depends}' does not name ${_pkg}")
  endif()
  if(DPKG_QUERY)
    execute_process(COMMAND ${DPKG_QUERY} -W -f=\${Status} ${_pkg} OUTPUT_VARIABLE _status
                    RESULT_VARIABLE _rc ERROR_QUIET)
    if(NOT _rc EQUAL 0 OR NOT _status MATCHES "install ok installed")
      message(FATAL_ERROR "${_name}: dependency ${_pkg} is not an installed Debian package here")
    endif()
  endif()
endforeach()

execute_process(COMMAND ${DPKG_DEB} --contents "${_deb}" OUTPUT_VARIABLE _contents RESULT_VARIABLE _rc)
_check("dpkg-deb --contents")
foreach(_file ./usr/include/ddpm/ddpm.hpp ./usr/share/cmake/ddpm/ddpmConfig.cmake
              ./usr/share/cmake/ddpm/ddpmTargets.cmake ./usr/share/cmake/ddpm/ddpmDependencies.cmake)
  string(FIND "${_contents}" " ${_file}\n" _at)
  if(_at EQUAL -1)
    message(FATAL_ERROR "${_name} does not contain ${_file}")
  endif()
endforeach()

file(REMOVE_RECURSE "${ROOT}")
execute_process(COMMAND ${DPKG_DEB} -x "${_deb}" "${ROOT}" RESULT_VARIABLE _rc)
_check("dpkg-deb -x")
if(NOT EXISTS "${ROOT}/usr/share/cmake/ddpm/ddpmConfig.cmake")
  message(FATAL_ERROR "dpkg-deb -x ${_deb} ${ROOT} left no usr/share/cmake/ddpm/ddpmConfig.cmake")
endif()
message("${_name}: Depends: ${_depends}")
message("deb OK")
