"""Sensitivity labels of one FHIR resource: which sensitive categories it belongs to.

`sensitive_labels(resource)` returns our canonical tags (`SENSITIVE_TAGS`). A clinician sees a
resource only if the patient's grant names every tag it carries (see `access.policy`).

Two routes, both always applied:

1. **`meta.security`: the authoritative route.** Whoever labels a resource (the patient, a clinician,
   an importer that received DS4P labels) states its sensitivity explicitly; we map HL7 `v3-ActCode`
   sensitivity and privacy-law codes and `v3-Confidentiality` R/V. It applies to every resource type.
   A sensitivity code we do not know, or a Confidentiality code we do not know, becomes "restricted":
   a label we cannot interpret must not make a resource *more* visible.
2. **Clinical codes: a floor, not an exhaustive classifier.** Most imported records carry no labels,
   so we also look at every Coding in the resource (Condition.code, Observation.code and value,
   Procedure.code, MedicationRequest.medicationCodeableConcept, Encounter.reasonCode, Claim items,
   contained resources...) and match it against `ICD10_RANGES` and `CODE_TABLE` below. Those lists
   cover the obvious codes (ICD-10 chapter ranges, the SNOMED CT / LOINC / RxNorm codes Synthea emits
   plus well-known ones); they will miss codes nobody listed, free text (narratives, notes in
   attachments) and resources that only *reference* a sensitive one. Label at the source when it
   matters. Patient, Practitioner, Organization and other administrative resources carry no clinical
   sensitivity: their codes are not matched (their `meta.security` still is).

Pure: no I/O, no database, no model validation (the resource has been validated on the way in).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal, get_args

SensitiveTag = Literal["mental-health", "sexual-reproductive", "hiv", "substance-use", "genetics", "restricted"]
SENSITIVE_TAGS: Final[frozenset[str]] = frozenset(get_args(SensitiveTag))

MENTAL_HEALTH: Final = "mental-health"
SEXUAL_REPRODUCTIVE: Final = "sexual-reproductive"
HIV: Final = "hiv"
SUBSTANCE_USE: Final = "substance-use"
GENETICS: Final = "genetics"
RESTRICTED: Final = "restricted"

_MH = frozenset({MENTAL_HEALTH})
_SRH = frozenset({SEXUAL_REPRODUCTIVE})
_HIV = frozenset({HIV})
_SUD = frozenset({SUBSTANCE_USE})
_GEN = frozenset({GENETICS})
_RESTRICTED = frozenset({RESTRICTED})
_NONE: frozenset[str] = frozenset()

# -- code systems --------------------------------------------------------------------------------
# Each system under its canonical R4 URL plus the older FHIR URL and the HL7 OID some senders still
# use: a label written with an alias must count the same (otherwise renaming the system would unhide).

ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SNOMED: Final = "http://snomed.info/sct"
LOINC: Final = "http://loinc.org"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10: Final = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"

_SYSTEM_ALIASES: Final[Mapping[str, str]] = {
    ACT_CODE: ACT_CODE,
    "http://hl7.org/fhir/v3/ActCode": ACT_CODE,
    "urn:oid:2.16.840.1.113883.5.4": ACT_CODE,
    CONFIDENTIALITY: CONFIDENTIALITY,
    "http://hl7.org/fhir/v3/Confidentiality": CONFIDENTIALITY,
    "urn:oid:2.16.840.1.113883.5.25": CONFIDENTIALITY,
    SNOMED: SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    LOINC: LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    RXNORM: RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    ICD10: ICD10,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    ICD10_CM: ICD10,  # ICD-10-CM refines WHO ICD-10; the category ranges below hold for both
    "urn:oid:2.16.840.1.113883.6.90": ICD10,
}

# -- route 1: meta.security -------------------------------------------------------------------------
# HL7 v3-ActCode _ActInformationSensitivityPolicy and _ActPrivacyLaw codes (THO; checked against the
# code list, 2024). Behavioral health (BH) spans mental health *and* substance use, so it needs both
# named. SDV (sexual assault, abuse, domestic violence), STD, PREGNANT, MST (military sexual trauma) and
# GENDER (gender and sexual orientation) fall under our sexual/reproductive tag; SCA/SICKLE (sickle
# cell) under genetics. Title 38 §7332 covers drug and alcohol abuse, HIV and sickle cell anemia.
SECURITY_LABEL_TAGS: Final[Mapping[str, frozenset[str]]] = {
    "PSY": _MH,  # psychiatry disorder information sensitivity
    "PSYTHPN": _MH,  # psychotherapy note information sensitivity
    "MH": _MH,  # mental health information sensitivity
    "EMOTDIS": _MH,  # emotional disturbance information sensitivity
    "COGN": _MH,  # cognitive disability information sensitivity
    "DVD": _MH,  # developmental disability information sensitivity
    "HIPAAPsyNotes": _MH,  # HIPAA psychotherapy notes
    "BH": _MH | _SUD,  # behavioral health information sensitivity
    "ETH": _SUD,  # substance abuse information sensitivity
    "SUD": _SUD,  # substance use disorder information sensitivity
    "ETHUD": _SUD,  # alcohol use disorder information sensitivity
    "OPIOIDUD": _SUD,  # opioid use disorder information sensitivity
    "42CFRPart2": _SUD,  # 42 CFR Part 2 (substance use disorder treatment records)
    "HIV": _HIV,  # HIV/AIDS information sensitivity
    "SEX": _SRH,  # sexuality and reproductive health information sensitivity
    "SDV": _SRH,  # sexual assault, abuse, or domestic violence information sensitivity
    "STD": _SRH,  # sexually transmitted disease information sensitivity
    "PREGNANT": _SRH,  # pregnancy information sensitivity
    "MST": _SRH,  # military sexual trauma information sensitivity
    "GENDER": _SRH,  # gender and sexual orientation information sensitivity
    "GDIS": _GEN,  # genetic disease information sensitivity
    "SCA": _GEN,  # sickle cell anemia information sensitivity
    "SICKLE": _GEN,  # sickle cell
    "Title38Section7332": _SUD | _HIV | _GEN,
}
# Confidentiality: U, L, M, N are ordinary; R (restricted) and V (very restricted) need naming.
_ORDINARY_CONFIDENTIALITY: Final = frozenset({"U", "L", "M", "N"})
_RESTRICTED_CONFIDENTIALITY: Final = frozenset({"R", "V"})

# -- route 2: clinical codes. THE TABLE -----------------------------------------------------------
# A floor, not exhaustive (see the module docstring); `meta.security` is the authoritative route.
# Sources: ICD-10 chapter V (F) and block boundaries; SNOMED CT codes found in the Synthea R4 bundles
# under ../shared/data/synthea and in Synthea's modules (depression, PTSD, anxiety, self-harm, opioid
# and alcohol use, HIV, pregnancy, contraception, intimate partner abuse), plus a few well-known
# concepts; LOINC HIV tests (eCQM "HIV Test" value set), viral load, screening instruments (PHQ-2/9,
# GAD-7, AUDIT-C, DAST-10, HARK), drug screens and genetic reports; RxNorm contraceptives in Synthea.
# Deliberately *not* listed: tobacco (F17, smoking status: not treated as substance-use sensitive),
# Alzheimer's disease (G30: neurological, unlike F01-F03 dementia), heritable diseases in general
# (cystic fibrosis...) apart from chromosomal abnormalities, carrier/susceptibility status and
# sickle cell, and SNOMED 5880005 (Synthea uses it for "Physical exam following abortion", but it
# is "Physical examination": labelling it would hide every routine exam).

# ICD-10 / ICD-10-CM, inclusive ranges of dotless code *prefixes*, compared on the code's first
# len(bound) characters. Lexicographic order is ICD order here ("O9A" sorts after "O99").
ICD10_RANGES: Final[tuple[tuple[str, str, frozenset[str]], ...]] = (
    ("F01", "F09", _MH),  # mental disorders due to known physiological conditions (dementia...)
    ("F10", "F16", _SUD),  # alcohol, opioid, cannabis, sedative, cocaine, stimulant use
    ("F18", "F19", _SUD),  # inhalant, other psychoactive substance use (F17 nicotine: excluded)
    ("F20", "F99", _MH),  # schizophrenia, mood, anxiety, personality, developmental, behavioral...
    ("R45851", "R45851", _MH),  # suicidal ideations
    ("T1491", "T1491", _MH),  # suicide attempt
    ("X71", "X83", _MH),  # intentional self-harm (external cause)
    ("Z915", "Z915", _MH),  # personal history of self-harm
    ("T40", "T40", _SUD),  # poisoning by narcotics and psychodysleptics (overdose)
    ("Z714", "Z715", _SUD),  # alcohol / drug abuse counselling
    ("B20", "B24", _HIV),  # HIV disease
    ("Z21", "Z21", _HIV),  # asymptomatic HIV infection status
    ("R75", "R75", _HIV),  # inconclusive laboratory evidence of HIV
    ("Z114", "Z114", _HIV),  # screening for HIV
    ("Z206", "Z206", _HIV),  # contact with / exposure to HIV
    ("Z717", "Z717", _HIV),  # HIV counselling
    ("O987", "O987", _HIV),  # HIV disease complicating pregnancy (also O chapter below)
    ("A50", "A64", _SRH),  # infections with a predominantly sexual mode of transmission
    ("N46", "N46", _SRH),  # male infertility
    ("N70", "N77", _SRH),  # inflammatory diseases of female pelvic organs
    ("N96", "N98", _SRH),  # recurrent pregnancy loss, female infertility, assisted fertilisation
    ("O00", "O9A", _SRH),  # pregnancy, childbirth and the puerperium (abortive outcomes O00-O08)
    ("Z30", "Z3A", _SRH),  # contraception, procreation, pregnancy, delivery, weeks of gestation
    ("Z113", "Z113", _SRH),  # screening for infections with a predominantly sexual mode
    ("Z202", "Z202", _SRH),  # contact with / exposure to sexually transmitted infections
    ("Z725", "Z725", _SRH),  # high risk sexual behaviour
    ("Z9851", "Z9852", _SRH),  # tubal ligation / vasectomy status
    ("T742", "T742", _SRH),  # sexual abuse, confirmed
    ("T762", "T762", _SRH),  # sexual abuse, suspected
    ("Z044", "Z044", _SRH),  # examination following alleged rape
    ("Q90", "Q99", _GEN),  # chromosomal abnormalities
    ("D57", "D57", _GEN),  # sickle-cell disorders (HL7 gives them their own SCA code)
    ("Z14", "Z15", _GEN),  # genetic carrier, genetic susceptibility to disease
)

CODE_TABLE: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    SNOMED: {
        # mental health
        "35489007": _MH,  # Depressive disorder
        "370143000": _MH,  # Major depressive disorder
        "36923009": _MH,  # Major depression, single episode
        "66344007": _MH,  # Recurrent major depression
        "47505003": _MH,  # Posttraumatic stress disorder
        "197480006": _MH,  # Anxiety disorder
        "21897009": _MH,  # Generalized anxiety disorder
        "371631005": _MH,  # Panic disorder
        "80583007": _MH,  # Severe anxiety (panic)
        "58214004": _MH,  # Schizophrenia
        "13746004": _MH,  # Bipolar disorder
        "192127007": _MH,  # Child attention deficit disorder (ICD F90)
        "110359009": _MH,  # Intellectual disability (ICD F70-F79)
        "6471006": _MH,  # Suicidal thoughts
        "225444004": _MH,  # At increased risk for suicide
        "86849004": _MH,  # Suicidal poisoning
        "287185009": _MH,  # Attempted suicide by cutting or stabbing
        "287182007": _MH,  # Attempted suicide by suffocation
        "44301001": _MH,  # Suicide
        "287191006": _MH,  # Suicide by suffocation
        "287193009": _MH,  # Suicide using firearm
        "171207006": _MH,  # Depression screening (procedure: its result is the sensitive part)
        # substance use
        "7200002": _SUD,  # Alcoholism
        "5602001": _SUD,  # Opioid abuse
        "6525002": _SUD,  # Dependent drug abuse
        "66214007": _SUD,  # Substance abuse
        "361055000": _SUD,  # Misuses drugs
        "10939881000119105": _SUD,  # Unhealthy alcohol drinking behavior
        "55680006": _SUD,  # Drug overdose
        "1149222004": _SUD,  # Overdose
        "56876005": _SUD,  # Drug rehabilitation and detoxification
        "266707007": _SUD,  # Drug addiction therapy
        "60112009": _SUD,  # Drug addiction counseling
        "61480009": _SUD,  # Drug detoxification
        # HIV
        "86406008": _HIV,  # Human immunodeficiency virus infection
        "62479008": _HIV,  # Acquired immune deficiency syndrome
        "165816005": _HIV,  # Human immunodeficiency virus positive
        # sexual and reproductive health (incl. SDV and STIs)
        "77386006": _SRH,  # Pregnancy
        "72892002": _SRH,  # Normal pregnancy
        "47200007": _SRH,  # High risk pregnancy
        "79586000": _SRH,  # Tubal pregnancy
        "19169002": _SRH,  # Miscarriage in first trimester
        "85116003": _SRH,  # Miscarriage in second trimester
        "156073000": _SRH,  # Complete miscarriage (Synthea: "Fetus with unknown complication")
        "35999006": _SRH,  # Blighted ovum
        "161744009": _SRH,  # Past pregnancy history of miscarriage
        "609496007": _SRH,  # Complication occurring during pregnancy
        "198992004": _SRH,  # Eclampsia in pregnancy
        "398254007": _SRH,  # Pre-eclampsia
        "37849005": _SRH,  # Congenital uterine anomaly
        "267253006": _SRH | _GEN,  # Fetus with chromosomal abnormality
        "714812005": _SRH,  # Induced termination of pregnancy
        "386394001": _SRH,  # Pregnancy termination care
        "10383002": _SRH,  # Counseling for termination of pregnancy
        "169230002": _SRH,  # Ultrasound scan for fetal viability
        "252160004": _SRH,  # Standard pregnancy test
        "424441002": _SRH,  # Prenatal initial visit
        "424619006": _SRH,  # Prenatal visit
        "65200003": _SRH,  # Insertion of intrauterine contraceptive device
        "46706006": _SRH,  # Replacement of contraceptive intrauterine device
        "169553002": _SRH,  # Insertion of subcutaneous contraceptive
        "301807007": _SRH,  # Removal of subcutaneous contraceptive
        "755621000000101": _SRH,  # Replacement of subcutaneous contraceptive
        "287664005": _SRH,  # Bilateral tubal ligation
        "267020005": _SRH,  # History of tubal ligation
        "183996000": _SRH,  # Sterilization requested
        "243077000": _SRH,  # Recommendation to limit sexual activity
        "706893006": _SRH,  # Victim of intimate partner abuse (SDV)
        "105629000": _SRH,  # Chlamydial infection
        "15628003": _SRH,  # Gonorrhea
        "76272004": _SRH,  # Syphilis
        "33839006": _SRH,  # Genital herpes simplex
        # genetics
        "41040004": _GEN,  # Complete trisomy 21 syndrome (Down syndrome)
    },
    LOINC: {
        # mental health screening results
        "44261-6": _MH,  # PHQ-9 total score
        "55757-9": _MH,  # PHQ-2 panel
        "55758-7": _MH,  # PHQ-2 total score
        "70274-6": _MH,  # GAD-7 total score
        # substance use screening and drug tests
        "75626-2": _SUD,  # Total score [AUDIT-C]
        "82667-7": _SUD,  # Total score [DAST-10]
        "65750-2": _SUD,  # Drugs of abuse 5 panel - Urine by Screen method
        "72479-9": _SUD,  # Drugs of abuse panel - Blood by Screen method
        # HIV status, antibody/antigen tests, viral load
        "55277-8": _HIV,  # HIV status
        "75622-1": _HIV,  # HIV 1 and 2 tests - Meaningful Use set
        "56888-1": _HIV,  # HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay
        "58900-2": _HIV,  # HIV 1+2 Ab+HIV1 p24 Ag [Units/volume] in Serum or Plasma by Immunoassay
        "7917-8": _HIV,  # HIV 1 Ab [Presence] in Serum
        "7918-6": _HIV,  # HIV 1+2 Ab [Presence] in Serum
        "7919-4": _HIV,  # HIV 2 Ab [Presence] in Serum
        "5220-9": _HIV,  # HIV 1 Ab [Units/volume] in Serum or Plasma by Immunoassay
        "5221-7": _HIV,  # HIV 1 Ab [Presence] in Serum or Plasma by Immunoblot
        "5222-5": _HIV,  # HIV 1 Ag [Presence] in Serum or Plasma by Immunoassay
        "5223-3": _HIV,  # HIV 1+2 Ab [Units/volume] in Serum or Plasma by Immunoassay
        "5224-1": _HIV,  # HIV 2 Ab [Units/volume] in Serum or Plasma by Immunoassay
        "5225-8": _HIV,  # HIV 2 Ab [Presence] in Serum by Immunoblot
        "68961-2": _HIV,  # HIV 1 Ab [Presence] in Serum, Plasma or Blood by Rapid immunoassay
        "80387-4": _HIV,  # HIV 1+2 Ab [Presence] in Serum, Plasma or Blood by Rapid immunoassay
        "89365-1": _HIV,  # HIV 1 and 2 Ab panel - Serum, Plasma or Blood by Rapid immunoassay
        "9821-0": _HIV,  # HIV 1 p24 Ag [Presence] in Serum
        "20447-9": _HIV,  # HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA
        "25836-8": _HIV,  # HIV 1 RNA [#/volume] (viral load) in Specimen by NAA
        # sexual and reproductive health, SDV
        "76690-7": _SRH,  # Sexual orientation
        "28245-9": _SRH,  # Abuse Status [OMAHA]
        "76504-0": _SRH,  # Total score [HARK] (intimate partner violence screen)
        # genetics
        "51969-4": _GEN,  # Genetic analysis report
        "69548-6": _GEN,  # Genetic variant assessment
        "81247-9": _GEN,  # Master HL7 genetic variant reporting panel
    },
    RXNORM: {
        # contraceptives prescribed in the Synthea records
        "1000126": _SRH,  # medroxyprogesterone acetate 150 MG/ML Injection
        "1000156": _SRH,  # medroxyprogesterone acetate 160 MG/ML Prefilled Syringe
        "1367439": _SRH,  # NuvaRing
        "1605257": _SRH,  # Liletta 52 MG Intrauterine System
        "1856546": _SRH,  # Kyleena 19.5 MG Intrauterine System
        "807283": _SRH,  # Mirena 52 MG Intrauterine System
        "389221": _SRH,  # Etonogestrel 68 MG Drug Implant
        "748856": _SRH,  # Yaz 28 Day Pack
        "748879": _SRH,  # Levora 0.15/30 28 Day Pack
        "748962": _SRH,  # Camila 28 Day Pack
        "749762": _SRH,  # Seasonique 91 Day Pack
        "751905": _SRH,  # Trinessa 28 Day Pack
        "757594": _SRH,  # Jolivette 28 Day Pack
        "831533": _SRH,  # Errin 28 Day Pack
        "978950": _SRH,  # Natazia 28 Day Pack
    },
}

# Administrative resources: who and where, not what happened to the patient.
NON_CLINICAL_TYPES: Final[frozenset[str]] = frozenset(
    {"Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Endpoint", "HealthcareService"}
)
# Top-level elements whose codings are not clinical content: meta is route 1, narrative is text.
_SKIPPED_TOP_LEVEL: Final = frozenset({"meta", "text"})


def sensitive_labels(resource: dict[str, Any]) -> frozenset[str]:
    """The canonical sensitivity tags of one resource (empty for an ordinary one)."""
    tags = set(_security_tags(resource.get("meta")))
    if resource.get("resourceType") not in NON_CLINICAL_TYPES:
        for system, code in _codings(resource):
            tags.update(code_tags(system=system, code=code))
    return frozenset(tags)


def code_tags(*, system: str, code: str) -> frozenset[str]:
    """Tags of one clinical Coding per the table above (empty when the code is not listed)."""
    canonical = _SYSTEM_ALIASES.get(system)
    if canonical is None:
        return _NONE
    if canonical == ICD10:
        return _icd10_tags(code)
    table = CODE_TABLE.get(canonical)
    return table.get(code.strip(), _NONE) if table is not None else _NONE


def security_label_tags(*, system: str, code: str) -> frozenset[str]:
    """Tags of one `meta.security` Coding. Unknown sensitivity codes fail closed to "restricted"."""
    canonical = _SYSTEM_ALIASES.get(system)
    if canonical == ACT_CODE:
        # Any ActCode in meta.security is a handling instruction; one we cannot map is treated as
        # restricted rather than ignored, so a newer or local sensitivity code never unhides a record.
        return SECURITY_LABEL_TAGS.get(code, _RESTRICTED)
    if canonical == CONFIDENTIALITY:
        if code in _ORDINARY_CONFIDENTIALITY:
            return _NONE
        return _RESTRICTED  # R, V, and anything unrecognised
    # Other systems (integrity/provenance observations, purpose of use) say nothing about sensitivity.
    return _NONE


def _security_tags(meta: object) -> Iterator[str]:
    if not isinstance(meta, dict):
        return
    security = meta.get("security")
    if security is None:
        return
    if not isinstance(security, list):
        yield RESTRICTED  # malformed labels: cannot tell what they protect, so protect everything
        return
    for coding in security:
        system, code = (coding.get("system"), coding.get("code")) if isinstance(coding, dict) else (None, None)
        if not isinstance(system, str) or not isinstance(code, str):
            yield RESTRICTED
            continue
        yield from security_label_tags(system=system, code=code)


def _codings(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (system, code) pair of a Coding anywhere in the resource, contained resources included.

    Iterative (an explicit stack), so a deeply nested document cannot exhaust Python's recursion.
    Quantities also carry system+code (UCUM units); they match no table, which is harmless.
    """
    stack: list[object] = [v for k, v in resource.items() if k not in _SKIPPED_TOP_LEVEL]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            system, code = node.get("system"), node.get("code")
            if isinstance(system, str) and isinstance(code, str):
                yield system, code
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _icd10_tags(code: str) -> frozenset[str]:
    # Senders write "F32.9", "F329" or "f32.9": compare the dotless upper-case form.
    key = code.strip().upper().replace(".", "")
    if len(key) < 3:
        return _NONE
    tags: set[str] = set()
    for first, last, found in ICD10_RANGES:
        head = key[: len(first)]
        if len(head) == len(first) and first <= head <= last:
            tags.update(found)
    return frozenset(tags)
