//! The topic trie: subscription patterns stored word by word, each node with
//! exact children plus a `*` slot and a `#` slot.
//!
//! Matching walks exact, `*` and `#` branches at once, visiting each (node,
//! position) pair at most once: a `#` node takes words one at a time instead
//! of trying every split, so `#.x.#.x.#.x.#` against 32 words costs at most
//! 8 nodes × 33 positions, not the ~52 000 recursive steps of trying every
//! split. Each value carries a key, so that removing one of 20 000
//! subscribers of a topic is one hash lookup, not a scan (a mass disconnect
//! would otherwise be quadratic).

use crate::model::destination::PatternWord;
use std::collections::{HashMap, HashSet};
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

    /// Appends every value whose pattern matches `words` to `out`, each once.
    pub fn matches<'a>(&'a self, words: &[Box<str>], out: &mut Vec<&'a T>) {
        self.matches_counting(words, out);
    }

    /// [`TopicTrie::matches`], returning how many (node, position) pairs
    /// the walk visited: at most (trie nodes reached) × (words + 1), each
    /// pair once, whatever the patterns (benchmarks and tests read it).
    pub fn matches_counting<'a>(&'a self, words: &[Box<str>], out: &mut Vec<&'a T>) -> usize {
        self.walk(words, |values| {
            out.extend(values.iter().map(|(_, value)| value))
        })
    }

    /// Appends every (key, value) whose pattern matches `words` to `out`,
    /// each once (for callers that choose among entries by key).
    pub fn matches_keyed<'a>(&'a self, words: &[Box<str>], out: &mut Vec<(&'a K, &'a T)>) {
        self.walk(words, |values| {
            out.extend(values.iter().map(|(key, value)| (key, value)))
        });
    }

    /// The walk behind the matches: hands `found` the values of each node
    /// whose pattern matches, each node once; returns the steps taken.
    fn walk<'a>(&'a self, words: &[Box<str>], mut found: impl FnMut(&'a [(K, T)])) -> usize {
        let mut steps = 0;
        let mut pending = vec![Visit {
            node: &self.root,
            at: 0,
            absorbs: false,
            after_many: false,
        }];
        // Pairs below a `#` can be reached along several paths (`#.a.#`
        // against `a.a.a`); those are remembered so each is walked once. A
        // pair with no `#` above it has its node's depth as its position
        // and one path from the root, so the common case needs no set.
        let mut seen: HashSet<(*const Node<K, T>, usize)> = HashSet::new();
        while let Some(visit) = pending.pop() {
            let Visit {
                node,
                at,
                absorbs,
                after_many,
            } = visit;
            if after_many && !seen.insert((node as *const Node<K, T>, at)) {
                continue;
            }
            steps += 1;
            let word = words.get(at);
            if word.is_none() {
                // Each node's end-of-words pair is visited once, so its
                // values are appended once.
                found(&node.values);
            }
            if let Some(many) = &node.many {
                // `#` taking no word; `absorbs` lets it take more, one by one.
                pending.push(Visit {
                    node: many,
                    at,
                    absorbs: true,
                    after_many: true,
                });
            }
            let Some(word) = word else { continue };
            if absorbs {
                pending.push(Visit {
                    node,
                    at: at + 1,
                    absorbs: true,
                    after_many,
                });
            }
            if let Some(child) = node.exact.get(word) {
                pending.push(Visit {
                    node: child,
                    at: at + 1,
                    absorbs: false,
                    after_many,
                });
            }
            if let Some(one) = &node.one {
                pending.push(Visit {
                    node: one,
                    at: at + 1,
                    absorbs: false,
                    after_many,
                });
            }
        }
        steps
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

/// One step of a match: `node` reached with `words[at..]` left.
struct Visit<'a, K, T> {
    node: &'a Node<K, T>,
    at: usize,
    /// `node` is a `#` slot: it may take the next word and stay.
    absorbs: bool,
    /// A `#` lies on the path from the root (the pair may recur).
    after_many: bool,
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
    use super::*;
    use crate::model::destination::{topic_pattern, topic_words, DestinationLimits};

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

    /// The words of `name`, for the trie.
    fn words(name: &str) -> Vec<Box<str>> {
        topic_words(name, &LIMITS).unwrap()
    }

    #[test]
    fn a_wildcard_bomb_costs_nodes_times_positions() {
        let t = trie(&["/topic/#.x.#.x.#.x.#"]);
        let topic = words(&format!("/topic/{}", vec!["x"; 32].join(".")));
        let mut out = Vec::new();
        let steps = t.matches_counting(&topic, &mut out);
        assert_eq!(out, vec![&0]);
        // 8 nodes (the root and 7 pattern words) × 33 positions; the walk
        // that tried every split of each `#` took 52 426 steps here.
        eprintln!("wildcard bomb: {steps} steps");
        assert!(steps <= 8 * 33, "{steps} steps");

        // A thousand different bombs: bounded by their nodes, not their paths.
        let patterns: Vec<String> = (0..1000)
            .map(|i| format!("/topic/#.x{}.#.x.#.x.#", i % 7))
            .chain((0..1000).map(|i| format!("/topic/*.#.x.#.x.#.x{i}")))
            .collect();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let t = trie(&refs);
        let topic = words(&format!("/topic/{}", vec!["x"; 32].join(".")));
        let mut out = Vec::new();
        let steps = t.matches_counting(&topic, &mut out);
        let nodes = 1 + 7 * 6 + (1 + 6 + 1000);
        assert!(steps <= nodes * 33, "{steps} steps for {nodes} nodes");
        assert!(out.is_empty(), "no x0..x6 or x<i> word at the end");
    }

    #[test]
    fn plain_topics_take_one_step_per_word() {
        let t = trie(&["/topic/a.b.c", "/topic/a.b.d", "/topic/z"]);
        let mut out = Vec::new();
        assert_eq!(t.matches_counting(&words("/topic/a.b.c"), &mut out), 4);
        assert_eq!(out, vec![&0]);
    }

    /// The RabbitMQ rule, spelled out the slow way, for comparison.
    fn naive(pattern: &[PatternWord], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            Some((PatternWord::Many, rest)) => (0..=words.len()).any(|k| naive(rest, &words[k..])),
            Some((word, rest)) => words.split_first().is_some_and(|(first, others)| {
                (match word {
                    PatternWord::Exact(exact) => **exact == **first,
                    _ => true,
                }) && naive(rest, others)
            }),
        }
    }

    #[test]
    fn every_small_pattern_matches_as_the_rule_says() {
        // Every pattern of up to 4 words over {a, b, *, #}, in one trie,
        // against every name of 1 to 5 words over {a, b}.
        let alphabet = ["a", "b", "*", "#"];
        let mut patterns = Vec::new();
        for len in 1..=4u32 {
            for code in 0..4usize.pow(len) {
                let words: Vec<&str> = (0..len)
                    .map(|i| alphabet[code / 4usize.pow(i) % 4])
                    .collect();
                patterns.push(format!("/topic/{}", words.join(".")));
            }
        }
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let t = trie(&refs);
        let parsed: Vec<Vec<PatternWord>> = refs
            .iter()
            .map(|p| topic_pattern(p, &LIMITS).unwrap())
            .collect();
        for len in 1..=5u32 {
            for code in 0..2usize.pow(len) {
                let name: Vec<&str> = (0..len).map(|i| alphabet[code >> i & 1]).collect();
                let expected: Vec<usize> = (0..parsed.len())
                    .filter(|&i| naive(&parsed[i], &name))
                    .collect();
                let found = matching(&t, &format!("/topic/{}", name.join(".")));
                assert_eq!(found, expected, "name {name:?}");
                for (i, pattern) in parsed.iter().enumerate() {
                    assert_eq!(
                        crate::model::destination::pattern_matches(pattern, &name),
                        expected.contains(&i),
                        "pattern_matches({}, {name:?})",
                        refs[i]
                    );
                }
            }
        }
    }
}
