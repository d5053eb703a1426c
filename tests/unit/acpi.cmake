# Unit tests for the ACPI tables (vmm/acpi). Included from tests/unit/CMakeLists.txt.
add_executable(acpi_tables_test ${CMAKE_CURRENT_LIST_DIR}/acpi_tables_test.cpp)
target_link_libraries(acpi_tables_test PRIVATE keel_acpi GTest::gtest_main)
add_test(NAME acpi_tables_test COMMAND acpi_tables_test)
set_tests_properties(acpi_tables_test PROPERTIES LABELS unit)
