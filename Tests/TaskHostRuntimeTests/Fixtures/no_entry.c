/* Fixture: a valid shared library that exports a function, but not taskhost_plugin_entry; the
 * host must refuse it and name the missing symbol. */
#include <stdint.h>

__attribute__((visibility("default"))) int32_t fixture_not_a_plugin(int32_t x) {
    return x + 1;
}
