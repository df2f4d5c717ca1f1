/* tests/unit/chain/cases_builtin.c: included by test_chain.c. */
#define BUILTIN_TESTS
