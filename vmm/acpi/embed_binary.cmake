# Turns a binary file into a C++ source defining a function that returns its
# bytes. Run as: cmake -DINPUT=<file> -DOUTPUT=<file.cpp> -DFUNCTION=<name>
#   -DNAMESPACE=<ns> -DHEADER=<include path> -P embed_binary.cmake
foreach(var INPUT OUTPUT FUNCTION NAMESPACE HEADER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_binary.cmake: ${var} is not set")
  endif()
endforeach()

file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
if(hex_length EQUAL 0)
  message(FATAL_ERROR "embed_binary.cmake: ${INPUT} is empty")
endif()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# 16 bytes per line keeps the generated file readable in a debugger.
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n    " bytes "${bytes}")
get_filename_component(input_name "${INPUT}" NAME)

file(WRITE "${OUTPUT}.tmp"
"// Generated from ${input_name} by embed_binary.cmake. Do not edit.
#include \"${HEADER}\"

namespace ${NAMESPACE} {

namespace {
constexpr uint8_t kBytes[] = {
    ${bytes}
};
}  // namespace

std::span<const uint8_t> ${FUNCTION}() { return kBytes; }

}  // namespace ${NAMESPACE}
")
# Only touch the output when it changes, so dependents do not rebuild needlessly.
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
