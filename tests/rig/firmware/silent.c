/* Test firmware: runs and talks, but never prints the health check's
 * pattern ("READY"): it prints "idle\r\n" every 500 ms. */
#include <util/delay.h>
#include "uart.h"

int main(void)
{
	uart_init();
	for (;;) {
		uart_puts("idle\r\n");
		_delay_ms(500);
	}
}
