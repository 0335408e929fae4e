/* Minimal polled UART0 for the rig's test firmware (ATmega328P or
 * ATmega2560, both at 16 MHz; USART0 has the same register names on both).
 * 115200 baud needs U2X0 at 16 MHz: UBRR = 16 gives 117647 baud (+2.1 %),
 * the same setting Optiboot and the Mega's stk500v2 bootloader use; without
 * U2X the error would be -3.5 %. */
#ifndef RIG_UART_H
#define RIG_UART_H

#include <avr/io.h>
#include <stdint.h>

#define RIG_BAUD 115200UL

static inline void uart_init(void)
{
	UCSR0A = _BV(U2X0);
	UBRR0 = (uint16_t)((F_CPU + 4UL * RIG_BAUD) / (8UL * RIG_BAUD) - 1UL);
	UCSR0B = _BV(RXEN0) | _BV(TXEN0);
	UCSR0C = _BV(UCSZ01) | _BV(UCSZ00); /* 8N1 */
}

static inline void uart_putc(char c)
{
	while (!(UCSR0A & _BV(UDRE0)))
		;
	UDR0 = (uint8_t)c;
}

static inline void uart_puts(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

static inline void uart_putu(uint32_t v)
{
	char buf[11];
	uint8_t i = 0;
	do {
		buf[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i)
		uart_putc(buf[--i]);
}

static inline uint8_t uart_getc(void)
{
	while (!(UCSR0A & _BV(RXC0)))
		;
	return UDR0;
}

#endif
