# Runs CMD ('|'-separated argv) and checks its exit status (EXPECT) and, when
# given, that stdout+stderr match REGEX. Usage:
#   cmake -DCMD="prog|--flag|value" -DEXPECT=2 [-DREGEX=...] [-DWORKDIR=...] -P expect_exit.cmake
string(REPLACE "|" ";" argv "${CMD}")
if(NOT WORKDIR)
  set(WORKDIR "${CMAKE_CURRENT_BINARY_DIR}")
endif()
execute_process(COMMAND ${argv} WORKING_DIRECTORY "${WORKDIR}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit status: ${rc}\n--- stdout:\n${out}\n--- stderr:\n${err}")
if(NOT "${rc}" STREQUAL "${EXPECT}")
  message(FATAL_ERROR "expected exit status ${EXPECT}, got ${rc}")
endif()
if(DEFINED REGEX AND NOT "${out}${err}" MATCHES "${REGEX}")
  message(FATAL_ERROR "output does not match '${REGEX}'")
endif()
