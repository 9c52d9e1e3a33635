//! The subjects of the durable subscriptions' stream (`durables.rs`):
//! which subjects cover which, and the fewest non-overlapping subjects that
//! capture a set of consumer filters (JetStream refuses a stream whose own
//! subjects overlap).

/// The subject of the stream while no durable subscription exists (a stream
/// needs one): nothing is published on it.
pub(super) fn placeholder(prefix: &str) -> String {
    format!("{prefix}.durables.none")
}

/// Whether NATS subject pattern `wide` matches every subject `narrow` does.
pub(super) fn covers(wide: &str, narrow: &str) -> bool {
    let mut narrow_tokens = narrow.split('.');
    for token in wide.split('.') {
        let Some(other) = narrow_tokens.next() else {
            return false;
        };
        match token {
            ">" => return true,
            "*" if other != ">" => {}
            literal if literal == other => {}
            _ => return false,
        }
    }
    narrow_tokens.next().is_none()
}

/// Whether some subject matches both NATS subject patterns.
fn overlaps(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            _ => return false,
        }
    }
}

/// The narrowest pattern of this shape that holds both `a` and `b`: equal
/// tokens kept, other ones `*`, and `>` from where either has it.
fn widen(a: &str, b: &str) -> String {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    let mut tokens = Vec::new();
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (Some(x), Some(y)) if x == y && x != ">" => tokens.push(x),
            (Some(">"), _) | (_, Some(">")) | (None, _) | (_, None) => {
                tokens.push(">");
                break;
            }
            _ => tokens.push("*"),
        }
    }
    tokens.join(".")
}

/// Stream subjects that capture every one of `subjects` and do not
/// overlap one another (JetStream refuses a stream whose own subjects
/// overlap): one that covers another takes its place, and two that only
/// overlap (`a.*.__`, `*.b.__`) give way to one that holds both
/// (`*.*.__`: the stream then also captures topics no durable
/// subscription matches; with interest retention they are not kept).
pub(super) fn cover(mut subjects: Vec<String>) -> Vec<String> {
    subjects.sort();
    subjects.dedup();
    let mut kept: Vec<String> = Vec::new();
    while let Some(mut subject) = subjects.pop() {
        // Merge with everything it overlaps, until nothing does.
        while let Some(index) = kept.iter().position(|k| overlaps(k, &subject)) {
            let other = kept.swap_remove(index);
            subject = if covers(&other, &subject) {
                other
            } else if covers(&subject, &other) {
                subject
            } else {
                widen(&other, &subject)
            };
        }
        kept.push(subject);
    }
    kept.sort();
    kept
}

/// A consumer's filter subjects, however given (one, or several).
pub(super) fn filters_of(config: &async_nats::jetstream::consumer::Config) -> Vec<String> {
    match config.filter_subject.is_empty() {
        true => config.filter_subjects.clone(),
        false => vec![config.filter_subject.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wider_subject_covers_a_narrower_one() {
        assert!(covers("p.topic.a.>", "p.topic.a.b.__"));
        assert!(covers("p.topic.a.>", "p.topic.a.*.__"));
        assert!(covers("p.topic.*.b.__", "p.topic.a.b.__"));
        assert!(!covers("p.topic.a.b.__", "p.topic.a.*.__"));
        assert!(!covers("p.topic.*.>", "p.topic.>"));
        assert!(!covers("p.topic.a.__", "p.topic.a.b.__"));
        assert!(!covers("p.topic.a.b.__", "p.topic.a.__"));
    }

    #[test]
    fn the_cover_drops_what_a_wider_subject_holds() {
        let subjects = vec![
            "p.topic.a.b.__".to_owned(),
            "p.topic.a.>".to_owned(),
            "p.topic.c.__".to_owned(),
            "p.topic.a.>".to_owned(),
        ];
        assert_eq!(cover(subjects), vec!["p.topic.a.>", "p.topic.c.__"]);
    }

    #[test]
    fn subjects_that_only_overlap_give_way_to_one_that_holds_both() {
        let subjects = vec![
            "p.topic.a.*.__".to_owned(),
            "p.topic.*.b.__".to_owned(),
            "p.topic.c.__".to_owned(),
        ];
        assert_eq!(cover(subjects), vec!["p.topic.*.*.__", "p.topic.c.__"]);
        let subjects = vec!["p.topic.a.*.c.__".to_owned(), "p.topic.*.b.>".to_owned()];
        assert_eq!(cover(subjects), vec!["p.topic.*.*.>"]);
        assert!(!overlaps("p.topic.a.__", "p.topic.a.b.__"));
        assert!(overlaps("p.topic.a.>", "p.topic.*.__"));
    }
}
