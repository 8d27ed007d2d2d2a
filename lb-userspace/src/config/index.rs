//! Key path → source position, for errors about values serde has already
//! accepted.
//!
//! serde_yaml gives a location only for the error that stops it; once a
//! value is deserialized its position is gone. So the same source is read a
//! second time with an event-level parser that reports spans, and every node
//! is recorded under the key path serde_yaml itself prints in its errors:
//! `serverfarms.web.reals[2].weight` (mapping keys joined by `.`, sequence
//! items as `[i]`, the root as the empty path).
//!
//! Only the first document is indexed. If this parser stops on something
//! serde_yaml accepted, the index is just shorter and the issues about the
//! missing paths carry no line:column; nothing fails because of it.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column (columns count characters, as serde_yaml's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: Span) -> Pos {
        // saphyr's lines are 1-based, its columns 0-based.
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// Where one node is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Node {
    /// The key that names it, for a mapping value (`None` for sequence items
    /// and the root).
    pub key: Option<Pos>,
    /// The value itself: a scalar's first character, a flow collection's
    /// bracket, a block collection's first entry.
    pub value: Pos,
}

/// A key written twice in one mapping; serde_yaml keeps the last one silently
/// for maps (`serverfarms`, `vips`, ...), so this is the only place to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Duplicate {
    pub path: String,
    pub at: Pos,
    pub first: Pos,
}

#[derive(Debug, Default)]
pub(super) struct PosIndex {
    nodes: HashMap<String, Node>,
    pub duplicates: Vec<Duplicate>,
}

/// An open collection while walking the events.
enum Frame {
    Map {
        path: String,
        /// The key just read, waiting for its value.
        key: Option<(String, Pos)>,
        /// Keys seen so far, to spot duplicates.
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// What a node that just started is.
enum Role {
    /// A mapping key: recorded in its frame, not a node of its own.
    Key,
    /// A value, at this path.
    Value(String),
}

impl PosIndex {
    pub fn build(src: &str) -> PosIndex {
        let mut index = PosIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(src) {
            // A syntax error: serde_yaml reports it with a better message.
            let Ok((event, span)) = item else { break };
            let pos = Pos::of(span);
            match event {
                Event::Scalar(text, ..) => {
                    index.place(&mut stack, pos, &text);
                }
                Event::Alias(_) => {
                    index.place(&mut stack, pos, "*");
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    // A collection used as a key (`? [a, b]: x`) gets a path
                    // nobody asks for; it only has to keep the stack balanced.
                    let path = match index.place(&mut stack, pos, "?") {
                        Role::Value(path) => path,
                        Role::Key => "?".to_owned(),
                    };
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map {
                            path,
                            key: None,
                            seen: HashMap::new(),
                        }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        index
    }

    /// Places a node that starts at `pos` under the innermost open collection.
    fn place(&mut self, stack: &mut [Frame], pos: Pos, text: &str) -> Role {
        let (path, key) = match stack.last_mut() {
            None => (String::new(), None),
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                (format!("{path}[{}]", *next - 1), None)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some((name, key_pos)) => (join(path, &name), Some(key_pos)),
                None => {
                    if let Some(&first) = seen.get(text) {
                        self.duplicates.push(Duplicate {
                            path: join(path, text),
                            at: pos,
                            first,
                        });
                    } else {
                        seen.insert(text.to_owned(), pos);
                    }
                    *key = Some((text.to_owned(), pos));
                    return Role::Key;
                }
            },
        };
        // A duplicate key's value overwrites the first: serde_yaml keeps the last.
        self.nodes.insert(path.clone(), Node { key, value: pos });
        Role::Value(path)
    }

    pub fn get(&self, path: &str) -> Option<Node> {
        self.nodes.get(path).copied()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }
}

/// `parent.key`, or `key` at the root.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}
