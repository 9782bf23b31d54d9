# Checks a training output folder written by a (multi-process) run: exactly one
# config.json, metrics.jsonl holding one line per step listed in STEPS (in order, no
# duplicates, as written by rank 0 alone), and exactly the checkpoints listed in
# CHECKPOINTS (no leftover .tmp files). Usage:
#   cmake -DDIR=run -DSTEPS="1;2;3;4" -DCHECKPOINTS="2;4" -P check_run_dir.cmake
if(NOT EXISTS "${DIR}/config.json")
  message(FATAL_ERROR "${DIR}/config.json is missing")
endif()
file(GLOB configs "${DIR}/config*.json*")
list(LENGTH configs n_configs)
if(NOT n_configs EQUAL 1)
  message(FATAL_ERROR "expected one config file in ${DIR}, found: ${configs}")
endif()

file(STRINGS "${DIR}/metrics.jsonl" lines)
set(steps "")
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^\\{\"[^\n]*\"step\":([0-9]+)[,}]")
    message(FATAL_ERROR "metrics.jsonl line without a step: ${line}")
  endif()
  list(APPEND steps "${CMAKE_MATCH_1}")
endforeach()
if(NOT "${steps}" STREQUAL "${STEPS}")
  message(FATAL_ERROR "metrics.jsonl steps are '${steps}', expected '${STEPS}'")
endif()

file(GLOB ckpts RELATIVE "${DIR}" "${DIR}/ckpt-*")
list(SORT ckpts)
set(expected "")
foreach(s IN LISTS CHECKPOINTS)
  string(LENGTH "${s}" len)
  math(EXPR pad "9 - ${len}")
  string(REPEAT "0" ${pad} zeros)
  list(APPEND expected "ckpt-${zeros}${s}.pt")
endforeach()
if(NOT "${ckpts}" STREQUAL "${expected}")
  message(FATAL_ERROR "checkpoints in ${DIR} are '${ckpts}', expected '${expected}'")
endif()
message("run folder ${DIR} OK: steps ${steps}; ${ckpts}")
