//! Fuzz the iptables-save / iptables-restore parser of meshcap-iptables: arbitrary text never panics,
//! and whatever parses renders to a canonical text that parses back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap_iptables::{Family, Rule, RuleSet};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for family in Family::ALL {
        if let Ok(rules) = RuleSet::parse(&text, family) {
            let save = rules.render_save();
            let again = RuleSet::parse(&save, family).expect("rendered save text parses");
            assert_eq!(again.render_save(), save, "save rendering is a fixpoint");
            let restore = rules.render_restore();
            let again = RuleSet::parse(&restore, family).expect("rendered restore text parses");
            assert_eq!(again.render_restore(), restore, "restore rendering is a fixpoint");
        }
    }
    for line in text.lines() {
        if let Ok(rule) = line.parse::<Rule>() {
            let canonical = rule.canonical();
            let reparsed: Rule = canonical.to_save_args().parse().expect("canonical rule parses");
            assert_eq!(reparsed.canonical(), canonical);
        }
    }
});
