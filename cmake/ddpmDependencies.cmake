# ddpm's OPTIONAL dependencies, looked up the same way by ddpm's own CMakeLists.txt
# (top level, add_subdirectory, FetchContent) and by the installed ddpmConfig.cmake
# (find_package, the .deb). Neither stops a configure: each sets DDPM_<X>_FOUND and,
# when missing, DDPM_<X>_MESSAGE saying what needs it and what to install. The headers
# that need them (#error in <ddpm/io/png.hpp>, <ddpm/distributed.hpp>) say the same at
# compile time, and find_package(ddpm COMPONENTS png distributed) turns a miss into a
# CMake error.
#
# Required dependencies (LibTorch, nlohmann_json, zlib) are found by the caller.

# stb (Debian: libstb-dev, headers in /usr/include/stb/): <ddpm/io/png.hpp> includes
# <stb/stb_image_write.h> and <stb/stb_easy_font.h>; <ddpm/train/trainer.hpp> and the
# umbrella <ddpm/ddpm.hpp> include <ddpm/io/png.hpp>. <ddpm/data/folder.hpp> (the folder
# dataset, registered by <ddpm/data/registry.hpp>) decodes PNG/JPEG/BMP with
# <stb/stb_image.h> when it is there (without it the folder dataset says what to install).
# Result: DDPM_STB_FOUND, DDPM_STB_INCLUDE_DIR (the directory holding stb/), DDPM_STB_MESSAGE.
macro(ddpm_find_stb)
  find_path(DDPM_STB_INCLUDE_DIR NAMES stb/stb_image_write.h
    DOC "Directory holding stb/stb_image_write.h, stb/stb_easy_font.h and stb/stb_image.h (Debian: libstb-dev)")
  if(DDPM_STB_INCLUDE_DIR AND EXISTS "${DDPM_STB_INCLUDE_DIR}/stb/stb_image_write.h"
     AND EXISTS "${DDPM_STB_INCLUDE_DIR}/stb/stb_easy_font.h"
     AND EXISTS "${DDPM_STB_INCLUDE_DIR}/stb/stb_image.h")
    set(DDPM_STB_FOUND TRUE)
    set(DDPM_STB_MESSAGE "")
  else()
    set(DDPM_STB_FOUND FALSE)
    string(CONCAT DDPM_STB_MESSAGE
      "stb not found (no stb/stb_image_write.h, stb/stb_easy_font.h and stb/stb_image.h under "
      "DDPM_STB_INCLUDE_DIR='${DDPM_STB_INCLUDE_DIR}'). <ddpm/io/png.hpp>, and through it "
      "<ddpm/train/trainer.hpp> and the umbrella <ddpm/ddpm.hpp>, need it, and the folder "
      "dataset (<ddpm/data/folder.hpp>) decodes images with it: install libstb-dev "
      "(Debian/Ubuntu) or set DDPM_STB_INCLUDE_DIR to the directory that holds stb/.")
  endif()
endmacro()

# c10d + Gloo, for ddpm::distributed (<ddpm/distributed.hpp>). c10d's headers come with
# LibTorch when it was built with USE_DISTRIBUTED and are searched ONLY in LibTorch's include
# directories, so they always match the LibTorch in use. Gloo's headers are searched there
# first (a LibTorch that bundles them), then on the usual paths (Debian: libgloo-dev; PyPI's
# torch wheel ships none, so it uses those too).
# Call after find_package(Torch). Result: DDPM_DISTRIBUTED_FOUND, DDPM_GLOO_INCLUDE_DIR,
# DDPM_C10D_INCLUDE_DIR, DDPM_DISTRIBUTED_MESSAGE.
macro(ddpm_find_distributed)
  find_path(DDPM_C10D_INCLUDE_DIR NAMES torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
    HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH
    DOC "LibTorch include directory holding torch/csrc/distributed/c10d/")
  find_path(DDPM_GLOO_INCLUDE_DIR NAMES gloo/config.h HINTS ${TORCH_INCLUDE_DIRS}
    DOC "Directory holding gloo/ headers (Debian: libgloo-dev)")
  set(DDPM_DISTRIBUTED_FOUND TRUE)
  set(DDPM_DISTRIBUTED_MESSAGE "")
  if(NOT (DDPM_C10D_INCLUDE_DIR AND EXISTS
          "${DDPM_C10D_INCLUDE_DIR}/torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"))
    set(DDPM_DISTRIBUTED_FOUND FALSE)
    string(APPEND DDPM_DISTRIBUTED_MESSAGE
      "LibTorch's c10d headers (torch/csrc/distributed/c10d/ProcessGroupGloo.hpp) are not in "
      "TORCH_INCLUDE_DIRS='${TORCH_INCLUDE_DIRS}': this LibTorch was built without "
      "USE_DISTRIBUTED; use one with it (Debian's libtorch-dev, PyTorch's own builds). ")
  endif()
  if(NOT (DDPM_GLOO_INCLUDE_DIR AND EXISTS "${DDPM_GLOO_INCLUDE_DIR}/gloo/config.h"))
    set(DDPM_DISTRIBUTED_FOUND FALSE)
    string(APPEND DDPM_DISTRIBUTED_MESSAGE
      "Gloo's headers (gloo/config.h) not found under "
      "DDPM_GLOO_INCLUDE_DIR='${DDPM_GLOO_INCLUDE_DIR}': install libgloo-dev (Debian/Ubuntu) "
      "or set DDPM_GLOO_INCLUDE_DIR to the directory that holds gloo/. ")
  endif()
  if(NOT DDPM_DISTRIBUTED_FOUND)
    string(PREPEND DDPM_DISTRIBUTED_MESSAGE
      "ddpm::distributed (<ddpm/distributed.hpp>) cannot be used: ")
    string(REPLACE ";" " " DDPM_DISTRIBUTED_MESSAGE "${DDPM_DISTRIBUTED_MESSAGE}")
  endif()
endmacro()
