//! UUIDs in vmadm's text form: the one type of Alcove's interfaces
//! (`alcove-uuid`), shared with vmm-server, the images library and the API.

pub use alcove_uuid::Uuid;
