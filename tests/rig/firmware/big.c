/* Test firmware for upload benchmarks: ~30 KB of flash, almost all of it a
 * PROGMEM table of pseudo-random bytes (so pages are not all 0xFF and cannot
 * be skipped).  The table is summed at start-up so it is not optimised away;
 * prints "big sum=S size=N\r\n" and then "big alive K\r\n" every second. */
#include <avr/pgmspace.h>
#include <util/delay.h>
#include "uart.h"

/* byte i of the table: top bits of a multiplicative hash of i */
#define V(i) ((uint8_t)((((uint32_t)(i)) * 2654435761UL) >> 24))
#define B4(i) V(i), V((i) + 1), V((i) + 2), V((i) + 3)
#define B16(i) B4(i), B4((i) + 4), B4((i) + 8), B4((i) + 12)
#define B64(i) B16(i), B16((i) + 16), B16((i) + 32), B16((i) + 48)
#define B256(i) B64(i), B64((i) + 64), B64((i) + 128), B64((i) + 192)
#define B1K(i) B256(i), B256((i) + 256), B256((i) + 512), B256((i) + 768)
#define B4K(i) B1K(i), B1K((i) + 1024), B1K((i) + 2048), B1K((i) + 3072)

/* 7 * 4096 + 1024 = 29696 bytes */
static const uint8_t table[] PROGMEM = {
	B4K(0), B4K(4096), B4K(8192), B4K(12288), B4K(16384), B4K(20480),
	B4K(24576), B1K(28672),
};

int main(void)
{
	uint32_t sum = 0, k = 0;
	uart_init();
	for (uint16_t i = 0; i < sizeof(table); i++)
		sum += pgm_read_byte(&table[i]);
	uart_puts("big sum=");
	uart_putu(sum);
	uart_puts(" size=");
	uart_putu(sizeof(table));
	uart_puts("\r\n");
	for (;;) {
		_delay_ms(1000);
		uart_puts("big alive ");
		uart_putu(k++);
		uart_puts("\r\n");
	}
}
