//! The public FIFF constants the export writes: tag kinds, data types, block kinds, channel
//! kinds, coil types and units (the values of MNE-Python's `constants.py`).

pub const FILE_ID: i32 = 100;
pub const DIR_POINTER: i32 = 101;
pub const BLOCK_ID: i32 = 103;
pub const BLOCK_START: i32 = 104;
pub const BLOCK_END: i32 = 105;
pub const FREE_LIST: i32 = 106;
pub const NOP: i32 = 108;
pub const NCHAN: i32 = 200;
pub const SFREQ: i32 = 201;
pub const CH_INFO: i32 = 203;
pub const MEAS_DATE: i32 = 204;
pub const DESCRIPTION: i32 = 206;
pub const T_STRING: i32 = 10;
pub const FIRST_SAMPLE: i32 = 208;
pub const LOWPASS: i32 = 219;
pub const HIGHPASS: i32 = 223;
pub const DATA_BUFFER: i32 = 300;
pub const REF_ROLE: i32 = 115;
pub const REF_FILE_ID: i32 = 116;
pub const REF_FILE_NUM: i32 = 117;
pub const REF_FILE_NAME: i32 = 118;
pub const B_REF: i32 = 118;
pub const ROLE_PREV_FILE: i32 = 1;
pub const ROLE_NEXT_FILE: i32 = 2;
pub const B_MEAS: i32 = 100;
pub const B_MEAS_INFO: i32 = 101;
pub const B_RAW_DATA: i32 = 102;
pub const T_VOID: i32 = 0;
pub const T_INT: i32 = 3;
pub const T_FLOAT: i32 = 4;
pub const T_CH_INFO_STRUCT: i32 = 30;
pub const T_ID_STRUCT: i32 = 31;
pub const NEXT_SEQ: i32 = 0;
pub const NEXT_NONE: i32 = -1;
pub const VERSION: i32 = (1 << 16) | 4;
pub const MEG_CH: i32 = 1;
pub const STIM_CH: i32 = 3;
pub const MISC_CH: i32 = 502;
pub const COIL_NONE: i32 = 0;
/// QuSpin zero-field OPM, second generation (a point magnetometer).
pub const COIL_OPM_MAG: i32 = 8002;
pub const UNIT_T: i32 = 112;
pub const UNIT_T_M: i32 = 201;
pub const UNIT_V: i32 = 107;
pub const UNIT_NONE: i32 = -1;
