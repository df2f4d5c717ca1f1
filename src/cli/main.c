/* cli/main.c: placeholder until the cli lands. */
#include "util/util.h"
int	main(void);
int
main(void)
{
	return 0;
}
