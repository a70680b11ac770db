//! A UUID as it appears in a path (`/vms/:uuid`): parsed at the boundary,
//! so a path trick (`..`, `%2f`, a name) never reaches the backend. The type
//! is the one of every Alcove interface (`alcove-uuid`).

pub use alcove_uuid::Uuid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_trick_is_not_a_uuid() {
        for s in ["../../../../../../etc/passwd..", "%2e%2e%2f%2e%2e%2fetc%2fpasswd%2e%2e%2e", "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0/.."] {
            assert_eq!(Uuid::parse(s), None, "{s}");
        }
    }
}
