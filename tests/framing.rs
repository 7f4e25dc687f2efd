//! Properties of the line framer: how the bytes were split into reads never changes the lines.

use proptest::prelude::*;
use relayd::framing::Framer;

/// Frames `data` read in pieces cut at `cuts`, returning the lines and the too-long count.
fn frame(max_line: usize, data: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
    let mut framer = Framer::new(max_line);
    let mut lines = Vec::new();
    let mut too_long = 0;
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort();
    for cut in cuts.into_iter().chain([data.len()]) {
        too_long += framer.feed(&data[at..cut], &mut lines);
        at = cut;
    }
    framer.finish(&mut lines);
    (lines, too_long)
}

/// The framer's contract, written the obvious way: split at newlines, drop long lines.
fn reference(max_line: usize, data: &[u8]) -> (Vec<u8>, usize) {
    let mut lines = Vec::new();
    let mut too_long = 0;
    for piece in data.split_inclusive(|&b| b == b'\n') {
        let mut line = piece.to_vec();
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if line.len() > max_line {
            too_long += 1;
        } else {
            lines.extend(line);
        }
    }
    (lines, too_long)
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    // Mostly newlines and a few letters, so lines of every length near the limit occur.
    prop::collection::vec(
        prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()],
        0..400,
    )
}

proptest! {
    #[test]
    fn any_split_gives_the_same_lines(data in stream(), cuts in prop::collection::vec(any::<usize>(), 0..20), max_line in 1usize..40) {
        prop_assert_eq!(frame(max_line, &data, &cuts), reference(max_line, &data));
    }
}
