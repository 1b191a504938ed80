"""The hand-written request families behind ``pairs.jsonl`` (read by ``build.py``).

Each family is one kind of instructor request, written several ways that must get the same answer
(``variants``: same slots, different wording), the slots it is filled from, and ``contrasts``: pairs
of templates over the same slots whose answers differ (a negation, an antonym, another question
word, a number left out). ``swap`` names two slots of one type whose exchange changes the answer
("from Paris to Rome" / "from Rome to Paris"). Every other hard negative comes from changing one
slot value (see ``SLOT_KIND`` in build.py for which kind each slot type yields).

Slot names are ``{type}`` or ``{type_suffix}`` (``{city_from}`` is a ``city``). Families whose task
is marked ``templated`` hold the text an instructor template embeds: only the rendered variable
values, joined by newlines.
"""

from __future__ import annotations

from typing import Any

Family = dict[str, Any]

FAMILIES: list[Family] = [
    # ---------------------------------------------------------------- extraction
    {
        "name": "refund_request",
        "task": "extraction",
        "variants": [
            "Extract the refund request: order {order}, {product}, refund of {amount}.",
            "Customer wants {amount} back for the {product} in order {order}. Extract the refund details.",
            "Please pull out the refund info: the {product} from order {order}, amount {amount}.",
            "refund request - order {order} - {product} - {amount}",
            "Get the refund details from this message: I'd like a refund of {amount} for the {product} (order {order}).",
        ],
        "contrasts": [
            (
                "negation",
                "The {product} in order {order} was delivered, please refund {amount}.",
                "The {product} in order {order} was not delivered, please refund {amount}.",
            ),
            (
                "number",
                "Get the refund details: the {product} from order {order}, {amount}.",
                "Get the refund details: the {product} from order {order}.",
            ),
        ],
    },
    {
        "name": "meeting_schedule",
        "task": "extraction",
        "variants": [
            "Schedule a meeting with {person} on {date} at {time}.",
            "Set up a meeting with {person} for {date}, {time}.",
            "Can you book a meeting with {person} on {date} at {time}?",
            "Put a meeting with {person} in my calendar: {date}, {time}.",
            "meeting with {person} {date} {time}",
        ],
        "contrasts": [
            (
                "antonym",
                "Schedule a meeting with {person} on {date} at {time}.",
                "Cancel the meeting with {person} on {date} at {time}.",
            ),
            (
                "date",
                "Set up a meeting with {person} on {date} at {time}.",
                "Set up a meeting with {person} at {time}.",
            ),
        ],
    },
    {
        "name": "meeting_move",
        "task": "extraction",
        "variants": [
            "Move my meeting with {person} from {day_a} to {day_b}.",
            "Reschedule the {person} meeting from {day_a} to {day_b}.",
            "Can you push my meeting with {person} from {day_a} to {day_b}?",
            "My meeting with {person} on {day_a} needs to move to {day_b}.",
            "please move the meeting with {person}: from {day_a} to {day_b}",
        ],
        "swap": ("day_a", "day_b"),
        "contrasts": [
            (
                "negation",
                "Move my meeting with {person} from {day_a} to {day_b}.",
                "Do not move my meeting with {person} from {day_a} to {day_b}.",
            ),
        ],
    },
    {
        "name": "flight_booking",
        "task": "extraction",
        "variants": [
            "Book a flight from {city_from} to {city_to} on {date} for {n} passengers.",
            "I need {n} tickets from {city_from} to {city_to} on {date}.",
            "Find flights {city_from} to {city_to}, {date}, {n} people.",
            "Flying from {city_from} to {city_to} on {date}, {n} of us. Extract the booking.",
            "Can you book {n} seats on a flight to {city_to} from {city_from} on {date}?",
        ],
        "swap": ("city_from", "city_to"),
        "contrasts": [
            (
                "antonym",
                "Book a one-way flight from {city_from} to {city_to} on {date} for {n} passengers.",
                "Book a round-trip flight from {city_from} to {city_to} on {date} for {n} passengers.",
            ),
            (
                "antonym",
                "Book a flight from {city_from} to {city_to} on {date} for {n} passengers.",
                "Cancel the flight from {city_from} to {city_to} on {date} for {n} passengers.",
            ),
        ],
    },
    {
        "name": "payment_extraction",
        "task": "extraction",
        "variants": [
            "{person_a} sent {person_b} {amount} on {date}. Extract the transaction.",
            "Extract the payment: {person_a} paid {person_b} {amount} on {date}.",
            "On {date}, {person_a} transferred {amount} to {person_b}.",
            "Transaction: {amount} from {person_a} to {person_b}, {date}.",
            "extract payment - {person_a} sent {amount} to {person_b} on {date}",
        ],
        "swap": ("person_a", "person_b"),
        "contrasts": [
            (
                "antonym",
                "{person_a} deposited {amount} on {date}. Extract the transaction.",
                "{person_a} withdrew {amount} on {date}. Extract the transaction.",
            ),
        ],
    },
    {
        "name": "contact_card",
        "task": "extraction",
        "variants": [
            "Extract the contact: {person}, {company}, {email}, {phone}.",
            "Please get the contact details from this signature: {person} | {company} | {email} | {phone}",
            "Contact info: {person} from {company}. Email {email}, phone {phone}.",
            "Save this contact: {person} ({company}), email: {email}, tel: {phone}",
        ],
        "contrasts": [
            (
                "identifier",
                "Extract the contact: {person}, {company}, {email}, {phone}.",
                "Extract the contact: {person}, {company}, {phone}.",
            ),
        ],
    },
    {
        "name": "bug_report",
        "task": "extraction",
        "variants": [
            "Extract the bug report: {app} {version} crashes on {os} with error {code}.",
            "{app} version {version} keeps crashing on {os}, error {code}. Pull out the bug details.",
            "Bug: {app} v{version} crashes on {os} with error code {code}.",
            "The {app} app ({version}) crashes every time on {os} - error {code}. Extract it.",
        ],
        "contrasts": [
            (
                "negation",
                "Extract the bug report: {app} {version} crashes on {os} with error {code}.",
                "Extract the bug report: {app} {version} no longer crashes on {os} with error {code}.",
            ),
            (
                "antonym",
                "{app} crashes on {os} with error {code} after upgrading to {version}.",
                "{app} crashes on {os} with error {code} after downgrading to {version}.",
            ),
        ],
    },
    {
        "name": "invoice_fields",
        "task": "extraction",
        "variants": [
            "Extract the invoice: {invoice} from {company}, total {amount}, due {date}.",
            "Invoice {invoice} ({company}) for {amount} is due on {date}. Extract the fields.",
            "Pull the fields from this invoice: number {invoice}, vendor {company}, amount {amount}, due date {date}.",
            "{company} invoice {invoice}: {amount}, payable by {date}",
        ],
        "contrasts": [
            (
                "antonym",
                "Invoice {invoice} from {company} for {amount} has been paid.",
                "Invoice {invoice} from {company} for {amount} is unpaid.",
            ),
            (
                "negation",
                "Invoice {invoice} from {company} for {amount} has been paid.",
                "Invoice {invoice} from {company} for {amount} has not been paid.",
            ),
        ],
    },
    {
        "name": "delivery_address",
        "task": "extraction",
        "variants": [
            "Change the delivery address for order {order} to {street}, {city} {zip}.",
            "Please ship order {order} to {street}, {city} {zip} instead.",
            "New delivery address for order {order}: {street}, {city} {zip}",
            "Can you send order {order} to {street}, {city} {zip}? Extract the new address.",
        ],
        "contrasts": [
            (
                "negation",
                "Order {order} has shipped to {street}, {city} {zip}.",
                "Order {order} has not shipped to {street}, {city} {zip}.",
            ),
        ],
    },
    {
        "name": "recipe_quantities",
        "task": "extraction",
        "variants": [
            "Extract the ingredients: {n_flour} cups of flour, {n_eggs} eggs and {grams_sugar} grams of sugar.",
            "List the ingredients with amounts: flour {n_flour} cups, eggs {n_eggs}, sugar {grams_sugar} grams.",
            "You need {n_flour} cups of flour, {n_eggs} eggs, and {grams_sugar} grams of sugar. Extract the ingredients.",
            "ingredients: {n_flour} cups flour, {n_eggs} eggs, {grams_sugar} g sugar",
        ],
        "contrasts": [
            (
                "antonym",
                "Extract the ingredients: {n_flour} cups of flour, {n_eggs} eggs and {grams_sugar} grams of sugar, add the sugar before the eggs.",
                "Extract the ingredients: {n_flour} cups of flour, {n_eggs} eggs and {grams_sugar} grams of sugar, add the sugar after the eggs.",
            ),
        ],
    },
    {
        "name": "hotel_stay",
        "task": "extraction",
        "variants": [
            "Book a room in {city} from {date_in} to {date_out} for {n} guests.",
            "I need a hotel in {city}, checking in on {date_in} and checking out on {date_out}, {n} guests.",
            "Reserve a hotel room for {n} people in {city}, {date_in} to {date_out}.",
            "Hotel in {city} for {n} guests from {date_in} until {date_out}, please.",
        ],
        "swap": ("date_in", "date_out"),
        "contrasts": [
            (
                "negation",
                "Book a room in {city} from {date_in} to {date_out} for {n} guests, with breakfast.",
                "Book a room in {city} from {date_in} to {date_out} for {n} guests, without breakfast.",
            ),
        ],
    },
    {
        "name": "user_age_template",
        "task": "extraction",
        "templated": True,
        "variants": [
            "{person} is {age} years old",
            "{person}, age {age}",
            "{person} is {age}",
            "{person}: {age} years old",
        ],
        "contrasts": [
            ("negation", "{person} is {age} years old", "{person} is not {age} years old"),
        ],
    },
    {
        "name": "route_template",
        "task": "extraction",
        "templated": True,
        "variants": [
            "{city_from}\n{city_to}\n{date}",
            "{city_from}\n{city_to}\n{date}.",
        ],
        "swap": ("city_from", "city_to"),
        "contrasts": [],
    },
    # ---------------------------------------------------------------- classification
    {
        "name": "sentiment_love",
        "task": "classification",
        "variants": [
            "Classify the sentiment: I love this {product}.",
            "What's the sentiment of this review? 'I love this {product}!'",
            "sentiment of: i love this {product}",
            "Is this review positive or negative: I love this {product}.",
            "Review: 'I love this {product}.' Classify its sentiment.",
        ],
        "contrasts": [
            (
                "antonym",
                "Classify the sentiment: I love this {product}.",
                "Classify the sentiment: I hate this {product}.",
            ),
            (
                "negation",
                "Classify the sentiment: I love this {product}.",
                "Classify the sentiment: I don't love this {product}.",
            ),
        ],
    },
    {
        "name": "review_rating",
        "task": "classification",
        "variants": [
            "Classify this review: {stars} stars, the {product} works great.",
            "Review ({stars} stars): the {product} works great. Positive or negative?",
            "Rate the sentiment: '{stars} stars - the {product} works great'",
            "Classify: I gave the {product} {stars} stars, it works great.",
        ],
        "contrasts": [
            (
                "antonym",
                "Classify this review: {stars} stars, the {product} works great.",
                "Classify this review: {stars} stars, the {product} works terribly.",
            ),
            (
                "negation",
                "Classify this review: {stars} stars, the {product} works great.",
                "Classify this review: {stars} stars, the {product} never works.",
            ),
        ],
    },
    {
        "name": "support_urgency",
        "task": "classification",
        "variants": [
            "Classify the urgency: my {device} stopped working and I need it {when}.",
            "How urgent is this ticket? 'My {device} stopped working, I need it {when}.'",
            "Urgency of this message: my {device} has stopped working and I need it {when}",
            "Triage this: {device} stopped working, need it {when}.",
        ],
        "contrasts": [
            (
                "negation",
                "Classify the urgency: my {device} stopped working and I need it {when}.",
                "Classify the urgency: my {device} stopped working and I don't need it {when}.",
            ),
            (
                "antonym",
                "Classify the urgency: my {device} stopped working and I need it {when}.",
                "Classify the urgency: my {device} started working and I need it {when}.",
            ),
        ],
    },
    {
        "name": "match_headline",
        "task": "classification",
        "variants": [
            "Classify the topic of this headline: {team_a} beat {team_b} {score} in the final.",
            "Topic of: '{team_a} beat {team_b} {score} in the final'",
            "Which section does this headline belong to? {team_a} beat {team_b} {score} in the final",
            "headline: {team_a} beat {team_b} {score} in the final - classify the topic",
        ],
        "swap": ("team_a", "team_b"),
        "contrasts": [
            (
                "antonym",
                "Classify the topic of this headline: {team_a} won against {team_b} in the final.",
                "Classify the topic of this headline: {team_a} lost against {team_b} in the final.",
            ),
        ],
    },
    {
        "name": "stock_headline",
        "task": "classification",
        "variants": [
            "Classify the market sentiment: {company} shares rose {pct} on {day}.",
            "Is this headline bullish or bearish? '{company} shares rose {pct} on {day}'",
            "market sentiment of: {company} shares rose {pct} on {day}",
            "Headline: {company} shares rose {pct} on {day}. Classify the sentiment for investors.",
        ],
        "contrasts": [
            (
                "antonym",
                "Classify the market sentiment: {company} shares rose {pct} on {day}.",
                "Classify the market sentiment: {company} shares fell {pct} on {day}.",
            ),
            (
                "number",
                "Classify the market sentiment: {company} shares rose {pct} on {day}.",
                "Classify the market sentiment: {company} shares rose on {day}.",
            ),
        ],
    },
    {
        "name": "banking_intent",
        "task": "classification",
        "variants": [
            "What is the intent: I want to block my {card} card.",
            "Classify the intent of this message: 'Please block my {card} card.'",
            "intent: block my {card} card",
            "Detect the intent: can you block my {card} card?",
        ],
        "contrasts": [
            (
                "antonym",
                "What is the intent: I want to block my {card} card.",
                "What is the intent: I want to unblock my {card} card.",
            ),
            (
                "antonym",
                "Detect the intent: can you activate my {card} card?",
                "Detect the intent: can you deactivate my {card} card?",
            ),
        ],
    },
    {
        "name": "prize_spam",
        "task": "classification",
        "variants": [
            "Is this email spam? 'You won {amount}! Claim your prize before {date}.'",
            "Classify as spam or not spam: You won {amount}, claim your prize before {date}.",
            "spam check: you won {amount}! claim your prize before {date}",
            "Spam or ham? Message: 'You won {amount}. Claim your prize before {date}.'",
        ],
        "contrasts": [
            (
                "negation",
                "Is this email spam? 'You won {amount}! Claim your prize before {date}.'",
                "Is this email spam? 'You have not won {amount}. Claim your prize before {date}.'",
            ),
        ],
    },
    {
        "name": "approval_email",
        "task": "classification",
        "variants": [
            "Classify this email: 'Please approve purchase order {po} for {amount} by {date}.'",
            "What kind of email is this? Please approve purchase order {po} for {amount} by {date}.",
            "email category: please approve purchase order {po} for {amount} by {date}",
            "Categorize: 'Could you approve purchase order {po} ({amount}) by {date}?'",
        ],
        "contrasts": [
            (
                "antonym",
                "Classify this email: 'Please approve purchase order {po} for {amount} by {date}.'",
                "Classify this email: 'Please reject purchase order {po} for {amount} by {date}.'",
            ),
        ],
    },
    {
        "name": "comment_stance",
        "task": "classification",
        "variants": [
            "Classify the stance of this comment: 'I agree with {person} about the {topic} plan.'",
            "Stance detection: I agree with {person} about the {topic} plan.",
            "Does this comment support or oppose the {topic} plan? 'I agree with {person} about the {topic} plan.'",
            "stance: i agree with {person} about the {topic} plan",
        ],
        "contrasts": [
            (
                "antonym",
                "Classify the stance of this comment: 'I agree with {person} about the {topic} plan.'",
                "Classify the stance of this comment: 'I disagree with {person} about the {topic} plan.'",
            ),
        ],
    },
    {
        "name": "login_log",
        "task": "classification",
        "variants": [
            "Classify this log line: user {user} logged in from {ip} at {time}.",
            "Is this log event suspicious? user {user} logged in from {ip} at {time}",
            "Log: {user} logged in from IP {ip} at {time}. Classify the event.",
            "classify event - user {user} logged in from {ip} at {time}",
        ],
        "contrasts": [
            (
                "antonym",
                "Classify this log line: user {user} logged in from {ip} at {time}.",
                "Classify this log line: user {user} logged out from {ip} at {time}.",
            ),
            (
                "negation",
                "Classify this log line: user {user} logged in from {ip} at {time}.",
                "Classify this log line: user {user} failed to log in from {ip} at {time}.",
            ),
        ],
    },
    {
        "name": "review_template",
        "task": "classification",
        "templated": True,
        "variants": [
            "The {product} arrived on time and works perfectly",
            "the {product} arrived on time and works perfectly.",
            "The {product} arrived on time, and it works perfectly!",
        ],
        "contrasts": [
            (
                "negation",
                "The {product} arrived on time and works perfectly",
                "The {product} arrived on time and does not work",
            ),
            (
                "antonym",
                "The {product} arrived on time and works perfectly",
                "The {product} arrived late and works perfectly",
            ),
        ],
    },
    # ---------------------------------------------------------------- question answering
    {
        "name": "capital_city",
        "task": "qa",
        "variants": [
            "What is the capital of {country}?",
            "what's the capital of {country}",
            "Which city is the capital of {country}?",
            "What is the capital city of {country}?",
            "Tell me the capital of {country}.",
        ],
        "contrasts": [
            (
                "question_word",
                "When did {city} become the capital of {country}?",
                "Why did {city} become the capital of {country}?",
            ),
            (
                "antonym",
                "What is the largest city in {country}?",
                "What is the smallest city in {country}?",
            ),
        ],
    },
    {
        "name": "store_hours",
        "task": "qa",
        "variants": [
            "Is the {store} in {city} open on {day}?",
            "is the {city} {store} open on {day}",
            "Will the {store} in {city} be open on {day}?",
            "Can I go to the {store} in {city} on {day}, is it open?",
        ],
        "contrasts": [
            (
                "antonym",
                "Is the {store} in {city} open on {day}?",
                "Is the {store} in {city} closed on {day}?",
            ),
            (
                "question_word",
                "Is the {store} in {city} open on {day}?",
                "Why is the {store} in {city} open on {day}?",
            ),
            (
                "question_word",
                "When does the {store} in {city} open on {day}?",
                "Where does the {store} in {city} open on {day}?",
            ),
        ],
    },
    {
        "name": "account_howto",
        "task": "qa",
        "variants": [
            "How do I reset my {thing}?",
            "How can I reset my {thing}?",
            "how to reset {thing}",
            "I forgot my {thing}. How do I reset it?",
            "What are the steps to reset my {thing}?",
        ],
        "contrasts": [
            (
                "antonym",
                "How do I enable two-factor authentication for my {thing}?",
                "How do I disable two-factor authentication for my {thing}?",
            ),
            (
                "question_word",
                "How do I reset my {thing}?",
                "Why do I need to reset my {thing}?",
            ),
        ],
    },
    {
        "name": "shipping_time",
        "task": "qa",
        "variants": [
            "How long does shipping to {country} take?",
            "How long will delivery to {country} take?",
            "how long is shipping to {country}",
            "If I order today, how long until it arrives in {country}?",
        ],
        "contrasts": [
            (
                "question_word",
                "How long does shipping to {country} take?",
                "How much does shipping to {country} cost?",
            ),
            (
                "question_word",
                "How much does express shipping to {country} cost?",
                "How many days does express shipping to {country} take?",
            ),
        ],
    },
    {
        "name": "product_feature",
        "task": "qa",
        "variants": [
            "Does the {product} support {feature}?",
            "Is {feature} supported on the {product}?",
            "does the {product} have {feature}",
            "Can I use {feature} with the {product}?",
        ],
        "contrasts": [
            (
                "negation",
                "Which {product} models support {feature}?",
                "Which {product} models don't support {feature}?",
            ),
            (
                "question_word",
                "Why does the {product} support {feature}?",
                "How does the {product} support {feature}?",
            ),
        ],
    },
    {
        "name": "unit_conversion",
        "task": "qa",
        "variants": [
            "Convert {n} {unit_a} to {unit_b}.",
            "How many {unit_b} is {n} {unit_a}?",
            "convert {n} {unit_a} into {unit_b}",
            "What is {n} {unit_a} in {unit_b}?",
            "Please convert {n} {unit_a} to {unit_b}",
        ],
        "swap": ("unit_a", "unit_b"),
        "contrasts": [],
    },
    {
        "name": "nobel_year",
        "task": "qa",
        "variants": [
            "When did {scientist} win the Nobel Prize?",
            "In what year did {scientist} win the Nobel Prize?",
            "when did {scientist} get the nobel prize",
            "What year was {scientist} awarded the Nobel Prize?",
        ],
        "contrasts": [
            (
                "question_word",
                "When did {scientist} win the Nobel Prize?",
                "Why did {scientist} win the Nobel Prize?",
            ),
            (
                "question_word",
                "Where did {scientist} win the Nobel Prize?",
                "How did {scientist} win the Nobel Prize?",
            ),
        ],
    },
    {
        "name": "size_comparison",
        "task": "qa",
        "variants": [
            "Is {country_a} bigger than {country_b}?",
            "is {country_a} bigger than {country_b}",
            "Is {country_a} bigger in area than {country_b}?",
            "Does {country_a} have a bigger area than {country_b}?",
        ],
        "swap": ("country_a", "country_b"),
        "contrasts": [
            (
                "antonym",
                "Is {country_a} bigger than {country_b}?",
                "Is {country_a} smaller than {country_b}?",
            ),
        ],
    },
    {
        "name": "return_window",
        "task": "qa",
        "variants": [
            "Can I return the {product} after {n} days?",
            "Is it possible to return the {product} after {n} days?",
            "can i still return the {product} after {n} days",
            "Am I allowed to return the {product} {n} days after delivery?",
        ],
        "contrasts": [
            (
                "antonym",
                "Can I return an opened {product} after {n} days?",
                "Can I return an unopened {product} after {n} days?",
            ),
            (
                "negation",
                "Can I return the {product} after {n} days?",
                "Why can't I return the {product} after {n} days?",
            ),
        ],
    },
    {
        "name": "order_status",
        "task": "qa",
        "variants": [
            "Where is my order {order}?",
            "where's order {order}",
            "Where is order {order} right now?",
            "Can you tell me where my order {order} is?",
        ],
        "contrasts": [
            ("question_word", "Where is my order {order}?", "When will my order {order} arrive?"),
            ("question_word", "Where is my order {order}?", "Why is my order {order} late?"),
        ],
    },
    {
        "name": "price_question",
        "task": "qa",
        "variants": [
            "How much does the {product} cost in {country}?",
            "how much is the {product} in {country}",
            "What's the price of the {product} in {country}?",
            "What does the {product} cost in {country}?",
        ],
        "contrasts": [
            (
                "question_word",
                "How much does the {product} cost in {country}?",
                "How many {product} units were sold in {country}?",
            ),
            (
                "antonym",
                "Where is the {product} cheapest in {country}?",
                "Where is the {product} most expensive in {country}?",
            ),
        ],
    },
    {
        "name": "weather_question",
        "task": "qa",
        "variants": [
            "What will the weather be in {city} on {day}?",
            "weather in {city} on {day}?",
            "What's the forecast for {city} on {day}?",
            "Tell me the weather forecast for {city} for {day}.",
        ],
        "contrasts": [
            (
                "antonym",
                "Will it be hot in {city} on {day}?",
                "Will it be cold in {city} on {day}?",
            ),
            (
                "negation",
                "Will it rain in {city} on {day}?",
                "Will it not rain in {city} on {day}?",
            ),
        ],
    },
    {
        "name": "founder_question",
        "task": "qa",
        "variants": [
            "Who founded {org}?",
            "who was the founder of {org}",
            "Who is the founder of {org}?",
            "Who started {org}?",
        ],
        "contrasts": [
            ("question_word", "Who founded {org}?", "When was {org} founded?"),
            ("question_word", "Where was {org} founded?", "Why was {org} founded?"),
        ],
    },
]
