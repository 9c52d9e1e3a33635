//! The topic trie: subscription patterns stored word by word, each node with
//! exact children plus a `*` slot and a `#` slot.
//!
//! Matching walks exact, `*` and `#` branches at once. Work is bounded because
//! patterns hold at most `max_multi_word_wildcards` (non-adjacent) `#` words
//! and names at most `max_destination_words` words. Each value carries a key,
//! so that removing one of 20 000 subscribers of a topic is one hash lookup,
//! not a scan (a mass disconnect would otherwise be quadratic).

use super::destination::PatternWord;
use std::collections::HashMap;
use std::hash::Hash;

/// Values (subscriptions) keyed by pattern, each with a key unique under
/// its pattern.
#[derive(Debug)]
pub struct TopicTrie<K, T> {
    root: Node<K, T>,
    len: usize,
}

#[derive(Debug)]
struct Node<K, T> {
    exact: HashMap<Box<str>, Node<K, T>>,
    one: Option<Box<Node<K, T>>>,
    many: Option<Box<Node<K, T>>>,
    /// Kept dense for fan-out; `positions` finds a key's slot.
    values: Vec<(K, T)>,
    positions: HashMap<K, usize>,
}

impl<K, T> Default for Node<K, T> {
    fn default() -> Self {
        Node {
            exact: HashMap::new(),
            one: None,
            many: None,
            values: Vec::new(),
            positions: HashMap::new(),
        }
    }
}

impl<K, T> Node<K, T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.exact.is_empty() && self.one.is_none() && self.many.is_none()
    }
}

impl<K, T> Default for TopicTrie<K, T> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Eq + Hash + Clone, T> TopicTrie<K, T> {
    /// Stores `value` under `pattern` with `key`; replaces the value that
    /// had the same key there.
    pub fn insert(&mut self, pattern: &[PatternWord], key: K, value: T) {
        let mut node = &mut self.root;
        for word in pattern {
            node = match word {
                PatternWord::Exact(w) => node.exact.entry(w.clone()).or_default(),
                PatternWord::One => node.one.get_or_insert_with(Default::default),
                PatternWord::Many => node.many.get_or_insert_with(Default::default),
            };
        }
        if let Some(&at) = node.positions.get(&key) {
            node.values[at].1 = value;
            return;
        }
        node.positions.insert(key.clone(), node.values.len());
        node.values.push((key, value));
        self.len += 1;
    }

    /// Removes the value with `key` under `pattern`, and prunes nodes left
    /// empty. Returns the value if there was one.
    pub fn remove(&mut self, pattern: &[PatternWord], key: &K) -> Option<T> {
        let removed = remove_in(&mut self.root, pattern, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Appends every value whose pattern matches `words` to `out`, each once
    /// (a pattern that matches along several paths, such as `#.#` shapes,
    /// reaches the same node more than once: nodes are deduplicated, which
    /// is cheap, rather than values, which are many).
    pub fn matches<'a>(&'a self, words: &[Box<str>], out: &mut Vec<&'a T>) {
        let mut nodes: Vec<&'a Node<K, T>> = Vec::new();
        walk(&self.root, words, &mut nodes);
        if nodes.len() > 1 {
            nodes.sort_unstable_by_key(|n| *n as *const Node<K, T>);
            nodes.dedup_by(|a, b| std::ptr::eq(*a, *b));
        }
        for node in nodes {
            out.extend(node.values.iter().map(|(_, value)| value));
        }
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

/// Collects the nodes holding the patterns that match `words`.
fn walk<'a, K, T>(node: &'a Node<K, T>, words: &[Box<str>], out: &mut Vec<&'a Node<K, T>>) {
    if let Some(many) = &node.many {
        // `#` takes zero, one, ... or all of the remaining words.
        for skip in 0..=words.len() {
            walk(many, &words[skip..], out);
        }
    }
    match words.split_first() {
        None => {
            if !node.values.is_empty() {
                out.push(node);
            }
        }
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

fn remove_in<K: Eq + Hash + Clone, T>(
    node: &mut Node<K, T>,
    pattern: &[PatternWord],
    key: &K,
) -> Option<T> {
    let Some((word, rest)) = pattern.split_first() else {
        let at = node.positions.remove(key)?;
        let (_, value) = node.values.swap_remove(at);
        if let Some((moved, _)) = node.values.get(at) {
            node.positions.insert(moved.clone(), at);
        }
        if node.values.is_empty() {
            // Give back the room of a topic that had many subscribers.
            node.values = Vec::new();
            node.positions = HashMap::new();
        }
        return Some(value);
    };
    match word {
        PatternWord::Exact(w) => {
            let child = node.exact.get_mut(w)?;
            let removed = remove_in(child, rest, key);
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
            let removed = remove_in(child, rest, key);
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

    fn trie(patterns: &[&str]) -> TopicTrie<usize, usize> {
        let mut trie = TopicTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(&topic_pattern(p, &LIMITS).unwrap(), i, i);
        }
        trie
    }

    /// The matches, sorted; each must come once.
    fn matching(trie: &TopicTrie<usize, usize>, name: &str) -> Vec<usize> {
        let mut out = Vec::new();
        trie.matches(&topic_words(name, &LIMITS).unwrap(), &mut out);
        let mut found: Vec<usize> = out.into_iter().copied().collect();
        found.sort();
        let count = found.len();
        found.dedup();
        assert_eq!(found.len(), count, "a value matched twice");
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
    fn a_pattern_reachable_along_several_paths_matches_once() {
        let t = trie(&["/topic/#.a.#", "/topic/a.#.a"]);
        assert_eq!(matching(&t, "/topic/a.a.a"), vec![0, 1]);
    }

    #[test]
    fn removing_one_of_many_keeps_the_others_findable() {
        let mut t = trie(&[]);
        let pattern = topic_pattern("/topic/feed", &LIMITS).unwrap();
        for key in 0..1000 {
            t.insert(&pattern, key, key);
        }
        for key in (0..1000).step_by(2) {
            assert_eq!(t.remove(&pattern, &key), Some(key));
        }
        assert_eq!(t.len(), 500);
        let odd: Vec<usize> = (1..1000).step_by(2).collect();
        assert_eq!(matching(&t, "/topic/feed"), odd);
        for key in odd {
            assert_eq!(t.remove(&pattern, &key), Some(key));
        }
        assert!(t.is_empty());
    }

    #[test]
    fn remove_prunes_and_keeps_others() {
        let mut t = trie(&["/topic/a.*", "/topic/a.*"]);
        let pattern = topic_pattern("/topic/a.*", &LIMITS).unwrap();
        assert_eq!(t.remove(&pattern, &0), Some(0));
        assert_eq!(matching(&t, "/topic/a.b"), vec![1]);
        assert_eq!(t.remove(&pattern, &1), Some(1));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "empty nodes are pruned");
        assert_eq!(t.remove(&pattern, &1), None);
    }
}
