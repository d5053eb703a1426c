# The control socket (control/control_server.h) and keelctl against it. Included
# from tests/unit/CMakeLists.txt. The unit-only (ASan) build has no tools/:
# keelctl is built here then, with the same sanitizers.
if(NOT TARGET keelctl)
  add_subdirectory(${CMAKE_SOURCE_DIR}/tools/keelctl ${CMAKE_BINARY_DIR}/tools/keelctl)
endif()

add_executable(control_server_test ${CMAKE_CURRENT_LIST_DIR}/control_server_test.cpp)
target_link_libraries(control_server_test PRIVATE keel_control GTest::gtest_main)
add_test(NAME control_server_test COMMAND control_server_test)
set_tests_properties(control_server_test PROPERTIES LABELS unit TIMEOUT 120)

add_executable(keelctl_test ${CMAKE_CURRENT_LIST_DIR}/keelctl_test.cpp)
target_link_libraries(keelctl_test PRIVATE keel_control GTest::gtest_main)
target_compile_definitions(keelctl_test PRIVATE KEELCTL_PATH="$<TARGET_FILE:keelctl>")
add_dependencies(keelctl_test keelctl)
add_test(NAME keelctl_test COMMAND keelctl_test)
set_tests_properties(keelctl_test PROPERTIES LABELS unit TIMEOUT 120)

add_executable(metric_set_test ${CMAKE_CURRENT_LIST_DIR}/metric_set_test.cpp)
target_link_libraries(metric_set_test PRIVATE keel_control GTest::gtest_main)
add_test(NAME metric_set_test COMMAND metric_set_test)
set_tests_properties(metric_set_test PROPERTIES LABELS unit TIMEOUT 120)

# keelctl top's table, from samples built as keel-agent builds them.
add_executable(keelctl_top_test ${CMAKE_CURRENT_LIST_DIR}/keelctl_top_test.cpp
               ${CMAKE_SOURCE_DIR}/tools/keelctl/top_table.cpp)
target_link_libraries(keelctl_top_test PRIVATE keel_control GTest::gtest_main)
add_test(NAME keelctl_top_test COMMAND keelctl_top_test)
set_tests_properties(keelctl_top_test PROPERTIES LABELS unit TIMEOUT 120)
