/* Test firmware: prints "count N\r\n" about every 100 ms, N from 0. */
#include <util/delay.h>
#include "uart.h"

int main(void)
{
	uint32_t n = 0;
	uart_init();
	for (;;) {
		uart_puts("count ");
		uart_putu(n++);
		uart_puts("\r\n");
		_delay_ms(100);
	}
}
