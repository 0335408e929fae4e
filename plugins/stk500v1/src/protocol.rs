//! The bytes of STK500v1 as Optiboot and ATmegaBOOT speak them (Atmel's
//! AVR061): the uploader sends them, and the daemon's demo board answers
//! them, so both read them from here.
//!
//! A command is its byte, its arguments, then [`CRC_EOP`]; the bootloader
//! answers [`STK_INSYNC`], the reply's bytes, then [`STK_OK`].

pub const STK_OK: u8 = 0x10;
pub const STK_INSYNC: u8 = 0x14;
pub const CRC_EOP: u8 = 0x20;
pub const STK_GET_SYNC: u8 = 0x30;
pub const STK_GET_PARAMETER: u8 = 0x41;
pub const STK_ENTER_PROGMODE: u8 = 0x50;
pub const STK_LEAVE_PROGMODE: u8 = 0x51;
pub const STK_LOAD_ADDRESS: u8 = 0x55;
pub const STK_PROG_PAGE: u8 = 0x64;
pub const STK_READ_PAGE: u8 = 0x74;
pub const STK_READ_SIGN: u8 = 0x75;
pub const PARAM_SW_MAJOR: u8 = 0x81;
pub const PARAM_SW_MINOR: u8 = 0x82;
