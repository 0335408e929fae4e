/* Test firmware: says "echo ready\r\n" once, then sends back every byte. */
#include "uart.h"

int main(void)
{
	uart_init();
	uart_puts("echo ready\r\n");
	for (;;)
		uart_putc((char)uart_getc());
}
