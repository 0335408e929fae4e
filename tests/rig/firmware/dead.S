; Test "bootloader" of a dead board: it sits where Optiboot would and
; spins forever, so every reset (and every power-on) lands in a loop that
; never answers the STK500 protocol and never starts a program.
	.section .text
	.global _start
_start:
	rjmp _start
