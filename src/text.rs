//! Text a peer sent, made safe to repeat: an error message or a log line names at most a prefix of it.

/// At most `max` characters of `text`, for an error message that names what a client sent: long input
/// is cut and its length given instead.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_keep_a_prefix_and_say_how_long() {
        assert_eq!(excerpt("KMC", 8), "KMC");
        assert_eq!(excerpt(&"x".repeat(100), 4), "xxxx... (100 bytes)");
        assert_eq!(excerpt("ééééé", 2), "éé... (10 bytes)");
    }
}
