/* Test firmware: the lab's idle program. Prints "READY\r\n" at start and
 * then every 500 ms, so a health check that starts listening late still
 * sees the pattern. */
#include <util/delay.h>
#include "uart.h"

int main(void)
{
	uart_init();
	for (;;) {
		uart_puts("READY\r\n");
		_delay_ms(500);
	}
}
