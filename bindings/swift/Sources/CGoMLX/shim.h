/* Pulls in the gomlx C ABI from the repository's include/ directory. */
#include "../../../../include/gomlx.h"
