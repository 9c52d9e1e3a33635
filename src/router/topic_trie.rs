//! The topic trie: subscription patterns stored word by word, each node with
//! exact children plus a `*` slot and a `#` slot.
//!
//! Matching walks exact, `*` and `#` branches at once. Work is bounded because
//! patterns hold at most `max_multi_word_wildcards` (non-adjacent) `#` words
//! and names at most `max_destination_words` words.

use super::destination::PatternWord;
use std::collections::HashMap;

/// Values (subscriptions) keyed by pattern.
#[derive(Debug)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    exact: HashMap<Box<str>, Node<T>>,
    one: Option<Box<Node<T>>>,
    many: Option<Box<Node<T>>>,
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            exact: HashMap::new(),
            one: None,
            many: None,
            values: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.exact.is_empty() && self.one.is_none() && self.many.is_none()
    }
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> TopicTrie<T> {
    /// Stores `value` under `pattern`.
    pub fn insert(&mut self, pattern: &[PatternWord], value: T) {
        let mut node = &mut self.root;
        for word in pattern {
            node = match word {
                PatternWord::Exact(w) => node.exact.entry(w.clone()).or_default(),
                PatternWord::One => node.one.get_or_insert_with(Default::default),
                PatternWord::Many => node.many.get_or_insert_with(Default::default),
            };
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Removes the first value under `pattern` for which `is_it` holds, and
    /// prunes nodes left empty. Returns the value if there was one.
    pub fn remove(&mut self, pattern: &[PatternWord], is_it: impl Fn(&T) -> bool) -> Option<T> {
        let removed = remove_in(&mut self.root, pattern, &is_it);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Appends every value whose pattern matches `words` to `out`. A value
    /// whose pattern matches along several paths (`#.#`-like shapes) may be
    /// appended more than once: callers deduplicate.
    pub fn matches<'a>(&'a self, words: &[Box<str>], out: &mut Vec<&'a T>) {
        walk(&self.root, words, out);
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn walk<'a, T>(node: &'a Node<T>, words: &[Box<str>], out: &mut Vec<&'a T>) {
    if let Some(many) = &node.many {
        // `#` takes zero, one, ... or all of the remaining words.
        for skip in 0..=words.len() {
            walk(many, &words[skip..], out);
        }
    }
    match words.split_first() {
        None => out.extend(node.values.iter()),
        Some((word, rest)) => {
            if let Some(child) = node.exact.get(word) {
                walk(child, rest, out);
            }
            if let Some(one) = &node.one {
                walk(one, rest, out);
            }
        }
    }
}

fn remove_in<T>(
    node: &mut Node<T>,
    pattern: &[PatternWord],
    is_it: &impl Fn(&T) -> bool,
) -> Option<T> {
    let Some((word, rest)) = pattern.split_first() else {
        let at = node.values.iter().position(is_it)?;
        return Some(node.values.swap_remove(at));
    };
    match word {
        PatternWord::Exact(w) => {
            let child = node.exact.get_mut(w)?;
            let removed = remove_in(child, rest, is_it);
            if child.is_empty() {
                node.exact.remove(w);
            }
            removed
        }
        PatternWord::One | PatternWord::Many => {
            let slot = if *word == PatternWord::One {
                &mut node.one
            } else {
                &mut node.many
            };
            let child = slot.as_mut()?;
            let removed = remove_in(child, rest, is_it);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::destination::{topic_pattern, topic_words, DestinationLimits};
    use super::*;

    const LIMITS: DestinationLimits = DestinationLimits {
        max_words: 32,
        max_multi_word_wildcards: 4,
    };

    fn trie(patterns: &[&str]) -> TopicTrie<usize> {
        let mut trie = TopicTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(&topic_pattern(p, &LIMITS).unwrap(), i);
        }
        trie
    }

    fn matching(trie: &TopicTrie<usize>, name: &str) -> Vec<usize> {
        let mut out = Vec::new();
        trie.matches(&topic_words(name, &LIMITS).unwrap(), &mut out);
        let mut found: Vec<usize> = out.into_iter().copied().collect();
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn exact_star_and_hash_match_like_rabbitmq() {
        let t = trie(&[
            "/topic/a.b",
            "/topic/a.*",
            "/topic/a.#",
            "/topic/#",
            "/topic/*.b.#",
            "/topic/a.#.c",
        ]);
        assert_eq!(matching(&t, "/topic/a.b"), vec![0, 1, 2, 3, 4]);
        assert_eq!(matching(&t, "/topic/a"), vec![2, 3]);
        assert_eq!(matching(&t, "/topic/a.x.y.c"), vec![2, 3, 5]);
        assert_eq!(matching(&t, "/topic/a.c"), vec![1, 2, 3, 5]);
        assert_eq!(matching(&t, "/topic/z"), vec![3]);
    }

    #[test]
    fn remove_prunes_and_keeps_others() {
        let mut t = trie(&["/topic/a.*", "/topic/a.*"]);
        let pattern = topic_pattern("/topic/a.*", &LIMITS).unwrap();
        assert_eq!(t.remove(&pattern, |v| *v == 0), Some(0));
        assert_eq!(matching(&t, "/topic/a.b"), vec![1]);
        assert_eq!(t.remove(&pattern, |v| *v == 1), Some(1));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "empty nodes are pruned");
        assert_eq!(t.remove(&pattern, |_| true), None);
    }
}
