/* Test firmware: prints "hello from the board\r\n" about every 200 ms, so a
 * console that connects at any time soon sees it. */
#include <util/delay.h>
#include "uart.h"

int main(void)
{
	uart_init();
	for (;;) {
		uart_puts("hello from the board\r\n");
		_delay_ms(200);
	}
}
