"""Development pairs for the semantic cache: (cached question, new question, category).

NEAR_MISSES differ in something that changes the answer and must never be served the
cached answer; PARAPHRASES ask the same thing in other words (a hit is welcome, a miss
costs one model call). The pairs cover several domains (a backup product, HR and expense
policy, cloud billing, databases, networking, Kubernetes, security, medicine, finance,
travel) and many kinds of near miss: direction, swapped roles and order, numbers and their
positions, pronouns, negation, words a synonym table would wrongly merge, words a stemmer
would wrongly merge, quantifiers, question words, modality and tense, units, entities, an
added qualifier.

``split(pairs)`` cuts each list into a *tune* and a *check* half, fixed before any result
was seen: within each category, pairs ordered by a hash of their text go alternately to
tune and check. The design is tuned on the tune half only; the check half and the
independent ``tests/data/semantic_heldout.yaml`` measure it. ``LEGACY_*`` are the pairs of
the previous version of this file: they were read while designing, so they count as tune.

Used by tests/test_semantic_cache.py and bench/semantic_cache.py (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

NEAR_MISSES = [
    # direction: to/from, into/out of, A->B vs B->A
    ("How do I back up to an external disk?", "How do I back up from an external disk?", "direction"),
    ("How do I migrate from PostgreSQL to MySQL?", "How do I migrate from MySQL to PostgreSQL?", "direction"),
    ("How do I copy files from the server to my laptop?",
     "How do I copy files from my laptop to the server?", "direction"),
    ("Can I move money from my savings account to my checking account?",
     "Can I move money from my checking account to my savings account?", "direction"),
    ("How do I import contacts into Outlook?", "How do I export contacts out of Outlook?", "direction"),
    ("Does traffic flow from the load balancer to the pods?",
     "Does traffic flow from the pods to the load balancer?", "direction"),
    ("How long is the flight from Paris to Tokyo?", "How long is the flight from Tokyo to Paris?", "direction"),
    ("How do I transfer a license to another user?", "How do I transfer a license from another user?",
     "direction"),
    ("Is replication from the primary to the replica synchronous?",
     "Is replication from the replica to the primary synchronous?", "direction"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?", "direction"),
    ("Can data be synced to the cloud?", "Can data be synced from the cloud?", "direction"),
    ("Who reports to the engineering manager?", "Who does the engineering manager report to?", "direction"),
    # swapped roles: same words, the entities trade places
    ("How do I restore a Linux backup on Windows?", "How do I restore a Windows backup on Linux?", "role_swap"),
    ("Does the client authenticate the server?", "Does the server authenticate the client?", "role_swap"),
    ("Can a manager approve an employee's leave request?",
     "Can an employee approve a manager's leave request?", "role_swap"),
    ("Does the parent pod inherit the limits of the namespace?",
     "Does the namespace inherit the limits of the parent pod?", "role_swap"),
    ("Is warfarin affected by aspirin?", "Is aspirin affected by warfarin?", "role_swap"),
    ("Can a contractor invite an employee to the workspace?",
     "Can an employee invite a contractor to the workspace?", "role_swap"),
    ("Does the orders table reference the customers table?",
     "Does the customers table reference the orders table?", "role_swap"),
    ("Who pays the fee when the buyer cancels the seller's order?",
     "Who pays the fee when the seller cancels the buyer's order?", "role_swap"),
    ("Can the admin see the user's password?", "Can the user see the admin's password?", "role_swap"),
    ("Does the primary key index cover the foreign key?",
     "Does the foreign key index cover the primary key?", "role_swap"),
    ("Does the subnet belong to the VPC?", "Does the VPC belong to the subnet?", "role_swap"),
    # order: A before/after B with A and B swapped
    ("Is compression applied before encryption?", "Is encryption applied before compression?", "order"),
    ("Should I run the migration before the deploy?", "Should I run the deploy before the migration?", "order"),
    ("Do I sign the contract before the background check?",
     "Do I do the background check before I sign the contract?", "order"),
    ("Does the pre-hook run before the snapshot is taken?",
     "Does the snapshot get taken before the pre-hook runs?", "order"),
    ("Is the manager approval needed before the HR approval?",
     "Is the HR approval needed before the manager approval?", "order"),
    ("Should I rotate the key and then revoke the old token?",
     "Should I revoke the old token and then rotate the key?", "order"),
    ("Do I sort and then deduplicate the rows?", "Do I deduplicate and then sort the rows?", "order"),
    ("Is the invoice sent after the payment clears?", "Is the payment cleared after the invoice is sent?",
     "order"),
    ("Does the firewall check the rule before the NAT?", "Does the NAT check the rule before the firewall?",
     "order"),
    # numbers: value, and the same numbers in other positions
    ("Can I keep 7 daily and 4 weekly snapshots?", "Can I keep 4 daily and 7 weekly snapshots?",
     "number_position"),
    ("Is the ratio 3 replicas to 2 zones supported?", "Is the ratio 2 replicas to 3 zones supported?",
     "number_position"),
    ("Does a 10 GB plan with 5 users cost more?", "Does a 5 GB plan with 10 users cost more?",
     "number_position"),
    ("Is 20 mg twice a day the same as 10 mg four times a day?",
     "Is 10 mg twice a day the same as 20 mg four times a day?", "number_position"),
    ("What is the penalty for 2 late payments in 12 months?",
     "What is the penalty for 12 late payments in 2 months?", "number_position"),
    ("Can I book 3 nights for 2 guests?", "Can I book 2 nights for 3 guests?", "number_position"),
    ("What changed in version 2.4?", "What changed in version 2.5?", "number_value"),
    ("Is port 8080 open by default?", "Is port 8443 open by default?", "number_value"),
    ("What is the maximum dose for a 40 kg child?", "What is the maximum dose for a 14 kg child?",
     "number_value"),
    ("How many vacation days do I get after 5 years?", "How many vacation days do I get after 10 years?",
     "number_value"),
    ("What does HTTP 502 mean?", "What does HTTP 503 mean?", "number_value"),
    ("Is Python 3.8 supported?", "Is Python 3.12 supported?", "number_value"),
    ("What is the fee for a transfer over 1000 dollars?", "What is the fee for a transfer over 10000 dollars?",
     "number_value"),
    # units
    ("Is the upload limit 5 GB?", "Is the upload limit 5 TB?", "unit"),
    ("Does the token expire after 24 hours?", "Does the token expire after 24 days?", "unit"),
    ("Is the dose 5 mg per kg?", "Is the dose 5 mcg per kg?", "unit"),
    ("Is the bandwidth capped at 100 Mbps?", "Is the bandwidth capped at 100 MBps?", "unit"),
    ("Is the per diem 50 euros?", "Is the per diem 50 dollars?", "unit"),
    # pronouns
    ("Can you decrypt my backups?", "Can I decrypt my backups?", "pronoun"),
    ("Can you see my files?", "Can I see my files?", "pronoun"),
    ("Do you store my payment details?", "Do I store my payment details?", "pronoun"),
    ("Can I read your logs?", "Can you read my logs?", "pronoun"),
    ("Can we cancel the contract early?", "Can they cancel the contract early?", "pronoun"),
    ("How do I delete my account?", "How do I delete your account?", "pronoun"),
    ("Does he need a visa?", "Does she need a visa?", "pronoun"),
    ("Can they access our data?", "Can we access their data?", "pronoun"),
    ("Will you notify me about a breach?", "Will I notify you about a breach?", "pronoun"),
    # negation
    ("Why is the backup running?", "Why is the backup not running?", "negation"),
    ("Which expenses are reimbursed?", "Which expenses are not reimbursed?", "negation"),
    ("Can I take this medication with alcohol?", "Can I take this medication without alcohol?", "negation"),
    ("Does the pod restart when the probe fails?", "Does the pod not restart when the probe fails?",
     "negation"),
    ("What happens if I pay on time?", "What happens if I don't pay on time?", "negation"),
    ("Is the API rate limited?", "Isn't the API rate limited?", "negation"),
    ("Which users have MFA enabled?", "Which users never have MFA enabled?", "negation"),
    # words a synonym table merges that are not synonyms here
    ("How do I resolve the hostname?", "How do I fix the hostname?", "false_synonym"),
    ("How do I remove a disk from the pool?", "How do I erase a disk from the pool?", "false_synonym"),
    ("How do I show hidden files?", "How do I list hidden files?", "false_synonym"),
    ("How do I delete a user from a group?", "How do I remove a user from a group?", "false_synonym"),
    ("How do I make a backup?", "How do I create a backup?", "false_synonym"),
    ("How do I stop the container?", "How do I halt the container?", "false_synonym"),
    ("How do I find a file?", "How do I locate a file?", "false_synonym"),
    ("How do I change the owner?", "How do I alter the owner?", "false_synonym"),
    ("What does the plan cost?", "What is the plan's price?", "false_synonym"),
    ("How big can a partition get?", "How large can a partition get?", "false_synonym"),
    ("Do I need a receipt?", "Do I require a receipt?", "false_synonym"),
    ("How do I launch the instance?", "How do I start the instance?", "false_synonym"),
    # words a stemmer merges
    ("What does the operator do?", "What does the operation do?", "stem_collision"),
    ("Who is the general contact?", "Who is the generation contact?", "stem_collision"),
    ("What is the university policy?", "What is the universal policy?", "stem_collision"),
    ("Is the organ donation policy in the handbook?", "Is the organization donation policy in the handbook?",
     "stem_collision"),
    ("What is the police budget?", "What is the policy budget?", "stem_collision"),
    ("Who is the author of the report?", "Who is the authority of the report?", "stem_collision"),
    ("What is the new format?", "What is the news format?", "stem_collision"),
    ("How do I contact the community team?", "How do I contact the communication team?", "stem_collision"),
    ("What experience is required?", "What experiment is required?", "stem_collision"),
    ("Is the provider responsible?", "Is the provision responsible?", "stem_collision"),
    # quantifiers
    ("Are all files encrypted?", "Are some files encrypted?", "quantifier"),
    ("Can every user see the dashboard?", "Can any user see the dashboard?", "quantifier"),
    ("Does it back up only the changed files?", "Does it back up the changed files?", "quantifier"),
    ("Are none of the logs retained?", "Are all of the logs retained?", "quantifier"),
    ("Is one approval enough?", "Is each approval enough?", "quantifier"),
    ("Do most regions support GPUs?", "Do all regions support GPUs?", "quantifier"),
    # question words
    ("Where are backups stored?", "When are backups stored?", "question_word"),
    ("Why did the job fail?", "When did the job fail?", "question_word"),
    ("How is the bonus calculated?", "When is the bonus calculated?", "question_word"),
    ("Who can approve expenses?", "How can I approve expenses?", "question_word"),
    ("What is replicated?", "Where is it replicated?", "question_word"),
    ("How much does a seat cost?", "How many seats does it cost?", "question_word"),
    # modality and tense
    ("Can I share my screen in the meeting?", "Must I share my screen in the meeting?", "modality"),
    ("Should I restart the node after the upgrade?", "Can I restart the node after the upgrade?", "modality"),
    ("Did the payment go through?", "Will the payment go through?", "tense"),
    ("Was the data encrypted?", "Will the data be encrypted?", "tense"),
    ("May I work remotely?", "Must I work remotely?", "modality"),
    # antonyms and one content word
    ("How do I enable autoscaling?", "How do I disable autoscaling?", "antonym"),
    ("What is the minimum password length?", "What is the maximum password length?", "antonym"),
    ("How do I grant read access?", "How do I revoke read access?", "antonym"),
    ("Is the upload speed limited?", "Is the download speed limited?", "antonym"),
    ("How do I lock a user account?", "How do I unlock a user account?", "antonym"),
    ("What increases the risk of bleeding?", "What decreases the risk of bleeding?", "antonym"),
    ("How do I encrypt a volume?", "How do I decrypt a volume?", "antonym"),
    ("Is inbound traffic allowed?", "Is outbound traffic allowed?", "antonym"),
    # comparatives
    ("Is SSD storage faster than HDD storage?", "Is SSD storage slower than HDD storage?", "comparative"),
    ("Which plan has more storage?", "Which plan has less storage?", "comparative"),
    ("Is the premium tier cheaper than the basic tier?", "Is the basic tier cheaper than the premium tier?",
     "comparative"),
    # time periods
    ("How many daily snapshots are kept?", "How many weekly snapshots are kept?", "period"),
    ("What is the monthly limit?", "What is the yearly limit?", "period"),
    ("Is the report generated weekly?", "Is the report generated hourly?", "period"),
    # entities
    ("How do I configure the S3 backend?", "How do I configure the Azure backend?", "entity"),
    ("Is macOS supported?", "Is Windows supported?", "entity"),
    ("Does the Pro plan include SSO?", "Does the Team plan include SSO?", "entity"),
    ("How do I install it on Ubuntu?", "How do I install it on Debian?", "entity"),
    ("Is ibuprofen safe during pregnancy?", "Is paracetamol safe during pregnancy?", "entity"),
    # prepositions that change the relation
    ("Is the key stored with the backup?", "Is the key stored without the backup?", "preposition"),
    ("Can I pay by card?", "Can I pay for a card?", "preposition"),
    ("Does the rule apply to the subnet?", "Does the rule apply within the subnet?", "preposition"),
    ("Is the meeting on Monday?", "Is the meeting until Monday?", "preposition"),
    # a qualifier that narrows the question
    ("Is Windows supported?", "Is Windows supported on ARM?", "qualifier"),
    ("How do I reset my password?", "How do I reset my password without email?", "qualifier"),
    ("What is the refund policy?", "What is the refund policy for annual plans?", "qualifier"),
    ("How do I restore a file?", "How do I restore a file from last year?", "qualifier"),
    ("Can I expense a taxi?", "Can I expense a taxi home?", "qualifier"),
]

PARAPHRASES = [
    # question frames and modals
    ("How do I reset my password?", "How can I reset my password?", "frame"),
    ("How do I rotate the API key?", "How to rotate the API key?", "frame"),
    ("How can I cancel my subscription?", "How do I cancel my subscription?", "frame"),
    ("Can I back up to Azure?", "Is it possible to back up to Azure?", "frame"),
    ("Can I pay by card?", "Am I able to pay by card?", "frame"),
    ("Where do I find the logs?", "Where can I find the logs?", "frame"),
    ("How would I scale the deployment?", "How do I scale the deployment?", "frame"),
    ("Could I get a refund?", "Can I get a refund?", "frame"),
    # contractions, case, punctuation, articles
    ("What's the maximum file size?", "What is the maximum file size?", "contraction"),
    ("Why isn't the pod starting?", "Why is the pod not starting?", "contraction"),
    ("What does error E1042 mean?", "what does error E1042 mean", "case_punct"),
    ("Where are backups stored?", "Where are the backups stored?", "article"),
    ("How do I create a snapshot?", "How do I create the snapshot?", "article"),
    ("Is VPN required for remote access?", "is VPN required for remote access??", "case_punct"),
    ("Who's the data protection officer?", "Who is the data protection officer?", "contraction"),
    ("I can't log in, what should I do?", "I cannot log in, what should I do?", "contraction"),
    # politeness and filler
    ("Please tell me how to export a report.", "How do I export a report?", "filler"),
    ("Hi, how do I add a user to the team?", "How do I add a user to the team?", "filler"),
    ("Can you tell me what the late fee is?", "What is the late fee?", "filler"),
    ("How do I reset the router, please?", "How do I reset the router?", "filler"),
    ("Thanks! Which regions are available?", "Which regions are available?", "filler"),
    ("What does deduplication do exactly?", "What does deduplication do?", "filler"),
    # function-word swaps that do not change the question
    ("What ports does the daemon use?", "Which ports does the daemon use?", "wh_swap"),
    ("What happens when a backup fails?", "What happens if a backup fails?", "if_when"),
    ("Who do I contact about a security issue?", "Whom do I contact about a security issue?", "wh_swap"),
    ("What regions support GPUs?", "Which regions support GPUs?", "wh_swap"),
    # numbers written differently
    ("Can I keep seven daily snapshots?", "Can I keep 7 daily snapshots?", "number_form"),
    ("Is the limit 1,000 requests per minute?", "Is the limit 1000 requests per minute?", "number_form"),
    ("Is the upload limit 5GB?", "Is the upload limit 5 GB?", "number_form"),
    # phrasal verbs and spellings
    ("How do I turn on compression?", "How do I enable compression?", "phrasal"),
    ("How do I switch off telemetry?", "How do I disable telemetry?", "phrasal"),
    ("How do I back-up my laptop?", "How do I back up my laptop?", "spelling"),
    ("How do I set up SSO?", "How do I setup SSO?", "spelling"),
    # real paraphrases a cautious cache may refuse (reordering, synonyms, extra words)
    ("How many daily snapshots does the default retention policy keep?",
     "How many daily snapshots are kept by the default retention policy?", "passive"),
    ("What does the Pro plan cost?", "How much is the Pro plan?", "reword"),
    ("How long does a restore usually take?", "How long does a restore take?", "reword"),
    ("What is the max upload size?", "What is the maximum upload size?", "abbreviation"),
    ("How do I get reimbursed for travel?", "How do I get my travel expenses reimbursed?", "reword"),
    ("Which storage backends are supported?", "Which storage backends does the product support?", "passive"),
    ("How many vacation days do new employees get?", "How many days of vacation do new employees get?",
     "reword"),
    ("What is the recommended dose of ibuprofen for adults?",
     "What is the recommended adult dose of ibuprofen?", "reword"),
    ("How do I list all pods in a namespace?", "How do I list every pod in a namespace?", "reword"),
    ("When does my card expire?", "When will my card expire?", "reword"),
    ("What is the difference between RAID 1 and RAID 5?", "How does RAID 1 differ from RAID 5?", "reword"),
    ("How do I fix error E1042?", "How do I fix the E1042 error?", "reword"),
    ("Is Windows supported?", "Does it support Windows?", "passive"),
]

# The previous version of this file (read while designing: tune half only).
LEGACY_PARAPHRASES = [
    ("How many daily snapshots does the default retention policy keep?",
     "How many daily snapshots are kept by the default retention policy?", "legacy"),
    ("How do I restore a deleted file?", "How can I restore a deleted file?", "legacy"),
    ("What does the Pro plan cost?", "What is the price of the Pro plan?", "legacy"),
    ("How do I encrypt my backups?", "How can I encrypt my backups?", "legacy"),
    ("Where are backups stored?", "Where are the backups stored?", "legacy"),
    ("How do I install the agent on Ubuntu?", "How do I install the agent on Ubuntu", "legacy"),
    ("How do I delete old snapshots?", "How do I remove old snapshots?", "legacy"),
    ("How do I change the backup schedule?", "How do I modify the backup schedule?", "legacy"),
    ("Which storage backends are supported?", "Which storage backends are supported by the product?", "legacy"),
    ("What is the maximum file size?", "What's the maximum file size?", "legacy"),
    ("How do I enable compression?", "How do I turn on compression?", "legacy"),
    ("How do I disable telemetry?", "How do I turn off telemetry?", "legacy"),
    ("How do I start a backup manually?", "How can I start a backup manually?", "legacy"),
    ("What happens when a backup fails?", "What happens if a backup fails?", "legacy"),
    ("How do I rotate the repository key?", "How can I rotate the repository key?", "legacy"),
    ("Is Windows supported?", "Is Windows supported by the agent?", "legacy"),
    ("How do I fix error E1042?", "How do I resolve error E1042?", "legacy"),
    ("How long does a restore take?", "How long does a restore usually take?", "legacy"),
    ("What are the system requirements?", "What are the system requirements for the agent?", "legacy"),
    ("How do I configure the S3 backend?", "How do I set up the S3 backend?", "legacy"),
    ("Can I back up to Azure?", "Is it possible to back up to Azure?", "legacy"),
    ("How do I list all snapshots?", "How do I show all snapshots?", "legacy"),
    ("How do I verify a backup?", "How can I verify a backup?", "legacy"),
    ("How do I create a new repository?", "How do I make a new repository?", "legacy"),
    ("What does deduplication do?", "What does deduplication do exactly?", "legacy"),
    ("How often should I run a prune?", "How often should I prune?", "legacy"),
    ("Where do I find the logs?", "Where can I find the logs?", "legacy"),
    ("How do I upgrade the agent?", "How can I upgrade the agent?", "legacy"),
    ("What ports does the daemon use?", "Which ports does the daemon use?", "legacy"),
    ("How do I exclude a folder from backups?", "How can I exclude a folder from backups?", "legacy"),
    ("Who do I contact about a security issue?", "Whom do I contact about a security issue?", "legacy"),
    ("How do I stop a running backup?", "How can I stop a running backup?", "legacy"),
]

LEGACY_NEAR_MISSES = [
    ("How many daily snapshots does the default retention policy keep?",
     "How many weekly snapshots does the default retention policy keep?", "legacy"),
    ("How many daily snapshots does the default retention policy keep?",
     "How many daily snapshots does the default retention policy delete?", "legacy"),
    ("What happens before a backup starts?", "What happens after a backup starts?", "legacy"),
    ("How do I restore a deleted file?", "How do I restore a deleted folder?", "legacy"),
    ("How do I encrypt my backups?", "How do I decrypt my backups?", "legacy"),
    ("Where are backups stored?", "When are backups stored?", "legacy"),
    ("How do I enable compression?", "How do I enable encryption?", "legacy"),
    ("What is the maximum file size?", "What is the minimum file size?", "legacy"),
    ("How do I start a backup manually?", "How do I stop a backup manually?", "legacy"),
    ("How do I upgrade the agent?", "How do I downgrade the agent?", "legacy"),
    ("What does the Pro plan cost?", "What does the Pro plan include?", "legacy"),
    ("How do I install the agent on Ubuntu?", "How do I uninstall the agent on Ubuntu?", "legacy"),
    ("Which storage backends are supported?", "Which storage backends are deprecated?", "legacy"),
    ("How long are monthly snapshots kept?", "How long are yearly snapshots kept?", "legacy"),
    ("How do I import a repository?", "How do I export a repository?", "legacy"),
    ("What is the default upload bandwidth limit?", "What is the default download bandwidth limit?", "legacy"),
    ("What changed in version 3.1?", "What changed in version 3.2?", "legacy"),
    ("How do I fix error E1042?", "How do I fix error E1043?", "legacy"),
    ("Can I keep 30 daily snapshots?", "Can I keep 60 daily snapshots?", "legacy"),
    ("What does error code 404 mean?", "What does error code 403 mean?", "legacy"),
    ("Why is the backup running?", "Why is the backup not running?", "legacy"),
    ("Which files are encrypted?", "Which files are not encrypted?", "legacy"),
    ("Can I restore without the repository key?", "Can I restore with the repository key?", "legacy"),
    ("Is Windows supported?", "Is Windows unsupported?", "legacy"),
    ("Is the limit 10 GB per file?", "Is the limit 10 MB per file?", "legacy"),
    ("Does the job time out after 30 minutes?", "Does the job time out after 30 hours?", "legacy"),
    ("Is the retention period measured in days?", "Is the retention period measured in weeks?", "legacy"),
    ("How do I configure the S3 backend?", "How do I configure the Azure backend?", "legacy"),
    ("Is Windows supported?", "Is macOS supported?", "legacy"),
    ("How do I install the agent on Ubuntu?", "How do I install the agent on Debian?", "legacy"),
    ("How do I back up a PostgreSQL database?", "How do I back up a MySQL database?", "legacy"),
    ("Does the Pro plan include SSO?", "Does the Team plan include SSO?", "legacy"),
]


def _digest(pair: tuple[str, str, str]) -> str:
    return hashlib.sha256("\n".join(pair).encode()).hexdigest()


def split(pairs: list[tuple[str, str, str]]) -> tuple[list, list]:
    """(tune, check): per category, pairs ordered by hash go alternately to tune and check."""
    tune, check = [], []
    for category in sorted({c for _, _, c in pairs}):
        ordered = sorted((p for p in pairs if p[2] == category), key=_digest)
        tune += ordered[0::2]
        check += ordered[1::2]
    return tune, check


NEAR_MISSES_TUNE, NEAR_MISSES_CHECK = split(NEAR_MISSES)
PARAPHRASES_TUNE, PARAPHRASES_CHECK = split(PARAPHRASES)
NEAR_MISSES_TUNE += LEGACY_NEAR_MISSES
PARAPHRASES_TUNE += LEGACY_PARAPHRASES

DEV = {
    "dev-tune": (NEAR_MISSES_TUNE, PARAPHRASES_TUNE),
    "dev-check": (NEAR_MISSES_CHECK, PARAPHRASES_CHECK),
}

HELDOUT = Path(__file__).resolve().parent / "data" / "semantic_heldout.yaml"


def load_heldout(path: Path = HELDOUT) -> tuple[list, list] | None:
    """(near misses, paraphrases) of the independent held-out set, or None if it is not there.
    Its pairs are never printed: callers report aggregate counts only."""
    if not path.exists():
        return None
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}

    def rows(name: str) -> list[tuple[str, str, str]]:
        return [(str(r[0]), str(r[1]), str(r[2]) if len(r) > 2 else "-") for r in data.get(name) or []]

    return rows("near_miss"), rows("paraphrase")


def served(embedder, pairs, workdir: Path, threshold: float) -> list[dict]:
    """For each (cached, new, category): was the new question served the cached answer?

    Goes through the real cache: the cached question is stored with its embedding and a
    fixed chunk set, the new one looked up with the same chunk set."""
    import numpy as np

    from llmctl.llm.cache import CacheHit, ResponseCache

    cache = ResponseCache(workdir / "pairs-cache.sqlite")
    out = []
    try:
        for i, (cached, new, category) in enumerate(pairs):
            cache.clear()
            old_vec, new_vec = embedder.embed_query(cached), embedder.embed_query(new)
            hit = CacheHit(f"k{i}", "exact", f"answer to: {cached}", "p", "m", {}, 0.001, [])
            cache.put(f"k{i}", "scope", 0.0, 3600, hit, ["c1", "c2"], cached, old_vec)
            got, _ = cache.get_semantic(new_vec, new, "scope", threshold, 1.0, chunk_ids=["c2", "c1"])
            assert got is None or (got.answer == f"answer to: {cached}" and got.question == cached)
            out.append({"category": category, "served": got is not None,
                        "similarity": float(np.dot(old_vec, new_vec))})
    finally:
        cache.close()
    return out


def evaluate(embedder, near: list, para: list, workdir: Path, threshold: float) -> dict:
    """Aggregate counts only: wrong hits (near misses served), per category, paraphrase recall."""
    wrong = served(embedder, near, workdir, threshold)
    good = served(embedder, para, workdir, threshold)
    per_category: dict[str, int] = {}
    for r in wrong:
        per_category.setdefault(r["category"], 0)
        per_category[r["category"]] += r["served"]
    return {
        "near_misses": len(near),
        "wrong_hits": sum(r["served"] for r in wrong),
        "near_misses_above_threshold": sum(r["similarity"] >= threshold for r in wrong),
        "wrong_hits_by_category": {c: n for c, n in sorted(per_category.items()) if n},
        "paraphrases": len(para),
        "paraphrases_served": sum(r["served"] for r in good),
        "paraphrase_recall": round(sum(r["served"] for r in good) / len(para), 3) if para else None,
    }
