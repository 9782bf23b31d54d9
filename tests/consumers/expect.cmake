# Runs a command and checks how it ended and what it said (for tests whose point is a
# message, e.g. "configures without stb, and says what to install").
#   cmake -DCOMMAND=<arg|arg|...> -DEXPECT=success|failure [-DREGEX1=..] [-DREGEX2=..]
#         [-DREGEX3=..] -P expect.cmake
# The command's arguments are separated by '|'; each REGEX must match its combined output.
string(REPLACE "|" ";" _cmd "${COMMAND}")
execute_process(COMMAND ${_cmd} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
message("${_out}")
message("exit status: ${_rc}")
if(EXPECT STREQUAL "success" AND NOT _rc EQUAL 0)
  message(FATAL_ERROR "expected the command to succeed")
elseif(EXPECT STREQUAL "failure" AND _rc EQUAL 0)
  message(FATAL_ERROR "expected the command to fail")
endif()
# The output is matched with its line breaks folded, so a regex may span a wrapped message.
string(REGEX REPLACE "[ \t\r\n]+" " " _flat "${_out}")
foreach(_r REGEX1 REGEX2 REGEX3)
  if(DEFINED ${_r} AND NOT _flat MATCHES "${${_r}}")
    message(FATAL_ERROR "output does not match ${_r}: ${${_r}}")
  endif()
endforeach()
message("expect OK")
