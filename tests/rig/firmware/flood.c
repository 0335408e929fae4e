/* Test firmware: floods the serial port, as a student's runaway program
 * does: "flood N " as fast as the UART takes it, with no pause. */
#include "uart.h"

int main(void)
{
	uint32_t n = 0;
	uart_init();
	for (;;) {
		uart_puts("flood ");
		uart_putu(n++);
		uart_putc(' ');
	}
}
