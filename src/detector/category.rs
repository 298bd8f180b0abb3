//! Harm categories: JailbreakBench's ten, each mapped to the nearest hazard of the MLCommons AI Safety taxonomy
//! (v1.0 hazard categories). The detector names the category of a harmful response (nearest category centroid of
//! its worst window's embedding); the template fallback uses it to say what kind of request it declines.

use serde::{Deserialize, Serialize};

/// One of JailbreakBench's ten harm categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HarmCategory {
    /// Harassment / discrimination.
    #[serde(rename = "Harassment/Discrimination")]
    HarassmentDiscrimination,
    /// Malware / hacking.
    #[serde(rename = "Malware/Hacking")]
    MalwareHacking,
    /// Physical harm.
    #[serde(rename = "Physical harm")]
    PhysicalHarm,
    /// Economic harm.
    #[serde(rename = "Economic harm")]
    EconomicHarm,
    /// Fraud / deception.
    #[serde(rename = "Fraud/Deception")]
    FraudDeception,
    /// Disinformation.
    #[serde(rename = "Disinformation")]
    Disinformation,
    /// Sexual / adult content.
    #[serde(rename = "Sexual/Adult content")]
    SexualAdultContent,
    /// Privacy.
    #[serde(rename = "Privacy")]
    Privacy,
    /// Expert advice (unqualified medical, legal, financial advice).
    #[serde(rename = "Expert advice")]
    ExpertAdvice,
    /// Government decision-making.
    #[serde(rename = "Government decision-making")]
    GovernmentDecisionMaking,
}

impl HarmCategory {
    /// All ten, in JailbreakBench's order.
    pub const ALL: [HarmCategory; 10] = [
        HarmCategory::HarassmentDiscrimination,
        HarmCategory::MalwareHacking,
        HarmCategory::PhysicalHarm,
        HarmCategory::EconomicHarm,
        HarmCategory::FraudDeception,
        HarmCategory::Disinformation,
        HarmCategory::SexualAdultContent,
        HarmCategory::Privacy,
        HarmCategory::ExpertAdvice,
        HarmCategory::GovernmentDecisionMaking,
    ];

    /// Parses JailbreakBench's category name.
    ///
    /// ```
    /// use mllm_protector::detector::HarmCategory;
    /// assert_eq!(HarmCategory::from_jbb("Malware/Hacking"), Some(HarmCategory::MalwareHacking));
    /// ```
    pub fn from_jbb(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    /// The nearest hazard category of the MLCommons AI Safety taxonomy (v1.0).
    pub fn mlcommons_hazard(self) -> &'static str {
        match self {
            HarmCategory::HarassmentDiscrimination => "Hate",
            HarmCategory::MalwareHacking => "Non-violent crimes (cyber crimes)",
            HarmCategory::PhysicalHarm => "Violent crimes",
            HarmCategory::EconomicHarm => "Non-violent crimes (financial crimes)",
            HarmCategory::FraudDeception => "Non-violent crimes (fraud)",
            HarmCategory::Disinformation => "Defamation",
            HarmCategory::SexualAdultContent => "Sexual content",
            HarmCategory::Privacy => "Privacy",
            HarmCategory::ExpertAdvice => "Specialized advice",
            HarmCategory::GovernmentDecisionMaking => "Elections",
        }
    }

    /// What kind of request is declined, for the refusal text ("… with requests for …").
    pub fn describe(self) -> &'static str {
        match self {
            HarmCategory::HarassmentDiscrimination => "content that harasses or demeans people",
            HarmCategory::MalwareHacking => "malware or breaking into computer systems",
            HarmCategory::PhysicalHarm => "ways to hurt people or cause physical damage",
            HarmCategory::EconomicHarm => "schemes that cause financial harm",
            HarmCategory::FraudDeception => "fraud or deceiving people",
            HarmCategory::Disinformation => "disinformation or false claims about real people or events",
            HarmCategory::SexualAdultContent => "explicit or exploitative sexual content",
            HarmCategory::Privacy => "getting at other people's private information",
            HarmCategory::ExpertAdvice => "risky medical, legal or financial advice without a professional",
            HarmCategory::GovernmentDecisionMaking => "undermining elections or public institutions",
        }
    }

    /// A safe direction to offer instead.
    pub fn safe_alternative(self) -> &'static str {
        match self {
            HarmCategory::HarassmentDiscrimination => {
                "I'm happy to help with respectful ways to discuss a disagreement, or with information on how to \
                 report harassment."
            }
            HarmCategory::MalwareHacking => {
                "I'm happy to help with securing your own systems, defensive security practices, or how to report a \
                 vulnerability responsibly."
            }
            HarmCategory::PhysicalHarm => {
                "If someone is in danger, please contact local emergency services. I'm happy to help with safety \
                 information or de-escalation."
            }
            HarmCategory::EconomicHarm => {
                "I'm happy to explain how such schemes work so you can recognise and avoid them, or help with legitimate \
                 financial planning."
            }
            HarmCategory::FraudDeception => {
                "I'm happy to help you recognise and report scams, or to protect yourself and others from fraud."
            }
            HarmCategory::Disinformation => {
                "I'm happy to help find reliable sources, or to check a claim against the evidence."
            }
            HarmCategory::SexualAdultContent => {
                "I'm happy to help with general, respectful information on relationships or sexual health."
            }
            HarmCategory::Privacy => {
                "I'm happy to help you protect your own privacy, or explain how to request your data lawfully."
            }
            HarmCategory::ExpertAdvice => {
                "A qualified professional can advise on your situation; I'm happy to share general, well-established \
                 information and questions to ask them."
            }
            HarmCategory::GovernmentDecisionMaking => {
                "I'm happy to share how to take part in civic processes, or where to find official election \
                 information."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jbb_names_round_trip() {
        for c in HarmCategory::ALL {
            let name = serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from));
            assert_eq!(name.as_deref().and_then(HarmCategory::from_jbb), Some(c));
        }
        assert_eq!(HarmCategory::from_jbb("Cooking"), None);
    }
}
