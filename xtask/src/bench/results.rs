//! The measurements `lb-bench` prints: `section<TAB>row<TAB>column<TAB>value`
//! lines (tests/src/bench/record.rs), kept in the order measured.

#[derive(Default)]
pub struct Results {
    lines: Vec<[String; 4]>,
}

impl Results {
    pub fn parse(&mut self, text: &str) {
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(4, '\t').collect();
            if let [s, r, c, v] = f[..] {
                self.lines.push([s, r, c, v].map(String::from));
            }
        }
    }

    /// Rows of a section in the order first seen (without `setup`).
    pub fn rows(&self, section: &str) -> Vec<&str> {
        let mut rows: Vec<&str> = Vec::new();
        for [s, r, ..] in &self.lines {
            if s == section && r != "setup" && !rows.contains(&r.as_str()) {
                rows.push(r);
            }
        }
        rows
    }

    pub fn get(&self, section: &str, row: &str, col: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|[s, r, c, _]| s == section && r == row && c == col)
            .map(|[.., v]| v.as_str())
    }

    pub fn num(&self, section: &str, row: &str, col: &str) -> Option<f64> {
        self.get(section, row, col)?.parse().ok()
    }
}
