r"""Build the committed instruction example root `examples/instruction/`: a few hundred conversations of a
general help assistant (orders, cooking, gardening, home repair, travel, fitness, money, writing, computers).

Run from the repository root:  .venv/bin/python scripts/make_instruction_example.py [--out FOLDER]

It deletes and recreates `<out>/raw/` and (re)writes `<out>/finetune.yaml`. Texts are composed from many
slot fillers and phrasings (seeded `random.Random(18)`: every run writes the same bytes), in three formats:

  raw/chats.jsonl        OpenAI `messages` (some multi-turn, some with a system turn), `id`, `category`
  raw/sharegpt.json      ShareGPT: a JSON list of {id, category, conversations: [{from, value}]}
  raw/alpaca.csv         Alpaca: id, category, instruction, input (some non-empty), output

Planted problems (`example()` returns them, so the tests know exactly what is where):
  personal data          card numbers (Luhn-valid test cards), e-mails, phone numbers and person names in
                         prompts, answers, system turns and Alpaca `input` (all fictitious)
  duplicate prompts      the same question asked again with the same answer, in another format or with other
                         spacing (exact duplicates of the whole conversation)
  conflicting answers    the same (or a near-identical) question with a different answer
  refusals               answers starting "As an AI language model ..." and the like
  malformed rows         a broken JSON line, conversations without an assistant turn, with an unknown role
                         or speaker, with an empty turn, and an Alpaca row without output

The base model is not committed: `finetune-pipeline build-base-model` (run by `make run`) builds a small
random-weight Llama with a tokenizer trained on these conversations into `.pipeline/base_model/`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "examples" / "instruction"
SEED = 18

FINETUNE_YAML = """\
# The instruction example root: conversations in three formats, run end to end offline on a small causal LM
# built from this root's own text (`finetune-pipeline build-base-model`, called by `make run`).
#   FINETUNE_DATA_DIR=examples/instruction make run
task: instruction
privacy:
  detector: presidio       # person names need NER; the patterns alone find e-mails, phones and cards only
dedup:
  semantic: true           # reworded prompts ("..., please?") are paraphrases: MiniLM cosine, not MinHash
checks:
  min_records: 50
training:
  build_base_model:
    enabled: true          # built from raw/ when missing: random weights, a BPE tokenizer trained here
  epochs: 4
  batch_size: 4
  lora:
    r: 16
    dropout: 0.0
    learning_rate: 0.01
  instruction:
    base_model: .pipeline/base_model   # relative: under this data root
    max_length: 256
    generation_samples: 8
    generation_max_new_tokens: 48
"""

# ---- the topics: each a list of (question, answer) built from slot fillers ---------------------------------


def _orders(rng: random.Random) -> list[tuple[str, str]]:
    products = ["espresso machine", "standing desk", "road bike", "air purifier", "robot vacuum", "rice cooker",
                "pair of noise cancelling headphones", "garden hose reel", "electric kettle", "office chair",
                "camping tent", "sewing machine", "toaster", "desk lamp", "blender"]
    problems = [("arrived with a cracked lid", "Send us a photo of the crack and we will post a replacement lid "
                 "within three working days; you do not need to return the damaged one."),
                ("makes a grinding noise when it starts", "A grinding noise at start-up usually means something is "
                 "loose inside the housing. Stop using it and book a free repair from your order page."),
                ("will not switch on after charging", "Unplug it for a full minute, then hold the power button for "
                 "ten seconds. If it still stays dark, the battery is faulty and we will replace it."),
                ("is missing two screws", "The spare screws ship separately in a small envelope. If it has not "
                 "arrived by Friday, tell us and we will send another set by first class post."),
                ("came in the wrong colour", "Sorry about the mix-up. Keep it in its box, print the free return "
                 "label from your account, and the right colour ships as soon as the courier scans the parcel."),
                ("has a scratch on the front", "Cosmetic damage on arrival is covered. Choose between a partial "
                 "refund of fifteen percent or a full exchange, and we will arrange whichever you prefer."),
                ("stopped working after a week", "Everything we sell has a two year warranty. Start a warranty "
                 "claim from the order page and we will collect it from your door.")]
    asks = ["My {p} {q}. What should I do?", "Hi, the {p} I ordered {q}. Can you help?",
            "I just unpacked my new {p} and it {q}. What are my options?",
            "What happens now? The {p} {q}.", "Quick question: my {p} {q}, is that covered?"]
    openers = ["Sorry to hear about the {p}.", "Thanks for telling us about your {p}.", "That should not happen "
               "with a new {p}.", "Let's get your {p} sorted.", ""]
    pairs = []
    for p in products:
        for q, a in rng.sample(problems, 2):
            opener = rng.choice(openers).format(p=p)
            pairs.append((rng.choice(asks).format(p=p, q=q), f"{opener} {a}".strip()))
    return pairs


def _cooking(rng: random.Random) -> list[tuple[str, str]]:
    dishes = {"banana bread": ("bake it at 175 degrees for about an hour", "a skewer comes out clean",
                               "wrapped at room temperature for three days"),
              "a lasagne": ("bake it covered for forty minutes, then uncovered for fifteen", "the edges bubble",
                            "in the fridge for four days or frozen in portions"),
              "brown rice": ("simmer it with a lid on for about forty minutes", "the water is fully absorbed",
                             "in a closed box in the fridge for one day only"),
              "a roast chicken": ("roast it at 200 degrees for twenty minutes per pound plus twenty",
                                  "the juices run clear at the thickest part of the thigh",
                                  "in the fridge for three days once cooled"),
              "hard boiled eggs": ("boil them for ten minutes and cool them in cold water", "the yolk is firm",
                                   "in their shells in the fridge for a week"),
              "a vegetable curry": ("simmer it for twenty five minutes after adding the vegetables",
                                    "the potatoes are soft", "in the fridge for three days; it tastes better "
                                    "the next day"),
              "pancakes": ("cook each one for two minutes a side on a medium heat", "bubbles burst on top",
                           "stacked with baking paper between them in the freezer"),
              "a pot of chili": ("simmer it gently for at least an hour", "the sauce has thickened",
                                 "in the fridge for four days or frozen for three months"),
              "roasted vegetables": ("roast them at 220 degrees for thirty minutes, turning once",
                                     "the edges are brown", "in the fridge for up to four days"),
              "a cheesecake": ("bake it at 160 degrees for an hour and leave it in the oven as it cools",
                               "the centre still wobbles slightly", "covered in the fridge for five days")}
    subs = [("buttermilk", "Stir a tablespoon of lemon juice into a cup of milk and let it stand for ten minutes."),
            ("eggs in baking", "Use three tablespoons of apple sauce or a mashed banana for each egg."),
            ("fresh herbs", "Use a third of the amount in dried herbs, added earlier so they can soften."),
            ("white wine in a sauce", "Use stock with a splash of vinegar for the same brightness."),
            ("brown sugar", "Mix white sugar with a tablespoon of molasses per cup."),
            ("heavy cream", "Blend silken tofu with a little milk, or use evaporated milk in cooked dishes.")]
    pairs = []
    for dish, (how, done, keep) in dishes.items():
        pairs.append((rng.choice(["How long do I cook {d}?", "What is the best way to cook {d}?",
                                  "Any tips for making {d} for the first time?"]).format(d=dish),
                      f"For {dish}, {how}. It is ready when {done}."))
        pairs.append((rng.choice(["How should I store leftover {d}?", "How long does {d} keep?",
                                  "Can I make {d} ahead of time?"]).format(d=dish),
                      f"Keep {dish} {keep}. Reheat it until it is hot all the way through."))
    for item, answer in subs:
        pairs.append((rng.choice(["What can I use instead of {i}?", "I have run out of {i}. Is there a substitute?",
                                  "Is there a good replacement for {i}?"]).format(i=item), answer))
    return pairs


def _garden(rng: random.Random) -> list[tuple[str, str]]:
    plants = ["tomato plants", "basil", "roses", "a lemon tree", "lavender", "strawberries", "a fiddle leaf fig",
              "courgettes", "hydrangeas", "chilli peppers", "an orchid", "blueberry bushes"]
    issues = [("have yellow leaves", "Yellow lower leaves usually mean too much water or too little nitrogen. Let "
               "the soil dry out between waterings and feed them with a balanced fertiliser every two weeks."),
              ("are covered in tiny green insects", "Those are aphids. Spray them off with a strong jet of water, "
               "then wipe the stems with soapy water; ladybirds will finish the job if you let them."),
              ("are wilting in the afternoon", "Afternoon wilting in hot weather is normal if they recover by "
               "evening. Water deeply in the morning and add a layer of mulch to keep the roots cool."),
              ("are not flowering", "Plants that grow leaves but no flowers often get too much nitrogen. Switch to "
               "a feed high in potassium and make sure they get at least six hours of sun."),
              ("have white powder on the leaves", "That is powdery mildew. Remove the worst leaves, improve the air "
               "flow around the plant, and water the soil rather than the leaves."),
              ("grow long and thin", "Leggy growth means the plant is reaching for light. Move it somewhere "
               "brighter and pinch out the tips so it branches.")]
    asks = ["My {p} {i}. What is wrong?", "Why do my {p} {i}?", "Help! My {p} {i}. Can I save them?",
            "What should I do when {p} {i}?"]
    pairs = []
    for p in plants:
        for i, a in rng.sample(issues, 2):
            pairs.append((rng.choice(asks).format(p=p, i=i), a))
    return pairs


def _home(rng: random.Random) -> list[tuple[str, str]]:
    fixes = [("stop a door from squeaking", "Lift the hinge pin halfway, wipe it, and rub a little petroleum jelly "
              "or silicone spray on it. Tap it back down and swing the door a few times."),
             ("fix a dripping kitchen tap", "Turn off the water under the sink, open the tap to drain it, then "
              "replace the washer or the cartridge inside. Take the old part to the shop to match the size."),
             ("unblock a slow bathroom sink", "Pull out the pop-up stopper and clear the hair around it. If it is "
              "still slow, pour boiling water followed by a cup of baking soda and a cup of vinegar."),
             ("fill a small hole in a plaster wall", "Clean the edges, press in a ready-mixed filler with a putty "
              "knife, let it dry, sand it flat and paint over it."),
             ("bleed a radiator", "With the heating off, hold a cloth under the valve at the top corner and turn "
              "the radiator key a quarter turn until water instead of air comes out, then close it."),
             ("stop a toilet from running", "Lift the cistern lid and check the flapper at the bottom. If it does "
              "not seal, clean it or replace it; if the float sits too high, lower it a little."),
             ("hang a heavy mirror safely", "Find a stud with a detector and use two screws into it, or use "
              "heavy-duty wall anchors rated well above the mirror's weight."),
             ("remove mould from bathroom grout", "Scrub it with a paste of baking soda and water, rinse, then spray "
              "a diluted bleach solution, leave it for ten minutes and rinse again with the window open."),
             ("fix a sticking drawer", "Empty it, rub candle wax or soap on the runners, and check that no screw "
              "head sticks out and catches on the frame."),
             ("reset a tripped fuse", "Find the switch that is down in the consumer unit, unplug everything on "
              "that circuit, push the switch back up, then plug things in one at a time to find the culprit.")]
    asks = ["How do I {f}?", "What is the easiest way to {f}?", "Can you explain how to {f}?",
            "I want to {f} myself. Where do I start?", "Is it hard to {f}?"]
    return [(rng.choice(asks).format(f=f), a) for f, a in fixes for _ in range(1)] + \
        [(f"Do I need a professional to {f}, or can I do it myself?",
          "Most people can do it in under an hour with basic tools. " + a.split(". ")[0] + ".")
         for f, a in rng.sample(fixes, 6)]


def _travel(rng: random.Random) -> list[tuple[str, str]]:
    cities = {"Lisbon": ("spring or early autumn", "the hills are steep, so bring comfortable shoes"),
              "Kyoto": ("late autumn for the leaves or April for the blossom", "temples close around five"),
              "Reykjavik": ("June to August for long days, or winter for the northern lights",
                            "the weather changes hourly, so pack layers"),
              "Mexico City": ("March to May, before the rainy season", "the altitude can tire you on day one"),
              "Edinburgh": ("May or September, avoiding the August festival crowds",
                            "rain comes and goes, so carry a light jacket"),
              "Cape Town": ("February to April, when it is warm but less windy", "book Table Mountain early"),
              "Vancouver": ("July and August for hiking", "distances between areas are larger than they look"),
              "Marrakech": ("October to April, outside the summer heat", "agree on taxi fares before you set off"),
              "Prague": ("April to June", "the old town is best before nine in the morning"),
              "Hanoi": ("October to December", "crossing the street takes slow, steady steps")}
    pairs = []
    for city, (when, tip) in cities.items():
        pairs.append((rng.choice(["When is the best time to visit {c}?", "What month should I go to {c}?",
                                  "I am planning a trip to {c}. When should I go?"]).format(c=city),
                      f"The best time for {city} is {when}. One tip: {tip}."))
        pairs.append((rng.choice(["What should I know before visiting {c}?", "Any advice for a first trip to {c}?",
                                  "What do first-time visitors to {c} get wrong?"]).format(c=city),
                      f"In {city}, {tip}. Plan your visit for {when} if you can."))
    return pairs


def _fitness(rng: random.Random) -> list[tuple[str, str]]:
    goals = [("run my first 5k", "Follow a couch-to-5k plan: three runs a week that alternate walking and "
              "jogging, adding a little more jogging each week. Most people finish in nine weeks."),
             ("stretch after a run", "Hold each stretch for thirty seconds: calves against a wall, hamstrings with a "
              "straight leg on a step, and quads by pulling your heel towards your seat."),
             ("start lifting weights safely", "Begin with light weights and learn the form of squats, rows and "
              "presses. Train each muscle group twice a week and add weight only when every rep looks clean."),
             ("improve my posture at the desk", "Set the screen at eye level, keep your feet flat, and stand up "
              "every half hour. Rows and band pull-aparts strengthen the upper back."),
             ("sleep better after evening workouts", "Finish hard sessions two hours before bed, cool down with easy "
              "stretching, and keep the bedroom cool and dark."),
             ("stay motivated to exercise", "Pick a fixed time, start small enough that you cannot fail, and track "
              "each session. Training with a friend makes skipping harder."),
             ("avoid shin splints", "Increase your weekly distance by no more than ten percent, run on softer "
              "ground when you can, and replace shoes after about five hundred miles."),
             ("warm up before football", "Jog lightly for five minutes, then do leg swings, lunges and short "
              "sprints so your muscles are ready for quick turns.")]
    asks = ["How do I {g}?", "What is a good way to {g}?", "Any advice on how to {g}?", "I want to {g}. Tips?"]
    return [(rng.choice(asks).format(g=g), a) for g, a in goals] + \
        [(f"How often should I practise if I want to {g}?", "Three short sessions a week beat one long one. "
          + a.split(". ")[-1]) for g, a in rng.sample(goals, 5)]


def _money(rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for price, percent in [(80, 15), (120, 25), (45, 20), (260, 10), (64, 50), (150, 30), (99, 40), (18, 5)]:
        off = price * percent / 100
        pairs.append((rng.choice(["What is {p}% off {x} pounds?", "A coat costs {x} pounds with {p}% off. What do "
                                  "I pay?", "How much do I save with {p}% off something that costs {x} pounds?"])
                      .format(p=percent, x=price),
                      f"{percent}% of {price} is {off:g}, so the discount is {off:g} pounds and you pay "
                      f"{price - off:g} pounds."))
    budgets = [("save for a holiday", "Work out the total, divide it by the months left, and set up a standing "
                "order for that amount on payday so it leaves before you can spend it."),
               ("build an emergency fund", "Aim for three months of essential costs. Start with a small fixed "
                "amount each week into a separate easy-access account."),
               ("split bills with housemates", "List every shared bill, agree a split, and use one joint account or "
                "an app that tracks who paid what each month."),
               ("cut my grocery bill", "Plan meals for the week, shop with a list, buy own brands and cook double "
                "portions to freeze."),
               ("pay off a credit card faster", "Pay more than the minimum every month, starting with the card that "
                "has the highest interest rate, and stop adding new spending to it.")]
    pairs += [(rng.choice(["How can I {b}?", "What is the simplest way to {b}?"]).format(b=b), a) for b, a in budgets]
    return pairs


def _writing(rng: random.Random) -> list[tuple[str, str, str]]:
    """(instruction, input, output): Alpaca rows whose input carries the text to work on."""
    formal = [("can u send me the report by tmrw thx", "Could you please send me the report by tomorrow? Thank you."),
              ("the meeting got moved, sorry bout that", "Please note that the meeting has been rescheduled. I "
               "apologise for the inconvenience."),
              ("we cant do the discount anymore", "Unfortunately, we are no longer able to offer the discount."),
              ("gonna be late, traffic is awful", "I will be arriving late because of heavy traffic."),
              ("ur invoice is wrong, fix it pls", "There appears to be an error on the invoice. Could you please "
               "correct it?")]
    reviews = [("The blender is loud but it crushes ice in seconds and cleans easily.", "Positive, with one "
                "complaint about the noise."),
               ("Delivery took three weeks and the box was soaked. Never again.", "Negative."),
               ("It does what it says. Nothing special, nothing wrong.", "Neutral."),
               ("Absolutely love this lamp, the warm light is perfect for reading.", "Positive."),
               ("The strap broke on the second day and support never answered.", "Negative.")]
    texts = [("Our library will close early on Friday for staff training. Books due that day can be returned on "
              "Saturday without a fine, and the online catalogue stays open all weekend.",
              "The library closes early on Friday for training; Friday returns are fine on Saturday."),
             ("The new bus timetable adds two evening services on route 12 and moves the first morning bus ten "
              "minutes earlier. Weekend times do not change.",
              "Route 12 gains two evening buses and an earlier first bus on weekdays."),
             ("Residents are asked to put garden waste out by seven in the morning, as collection rounds now start "
              "an hour earlier. Bins left out later may not be emptied.",
              "Garden waste must be out by 7 am because collections start an hour earlier."),
             ("The swimming pool will reopen on the first of March after repairs to the roof. Members keep their "
              "bookings, and lessons resume the following week.",
              "The pool reopens on 1 March after roof repairs; lessons restart a week later.")]
    rows = [(rng.choice(["Rewrite this sentence in a formal tone.", "Make this message sound professional.",
                         "Turn this casual note into polite business English."]), s, out) for s, out in formal]
    rows += [(rng.choice(["What is the sentiment of this review?", "Classify the sentiment of the following "
                          "customer review.", "Is this review positive, negative or neutral?"]), r, out)
             for r, out in reviews]
    rows += [(rng.choice(["Summarise this notice in one sentence.", "Give a one-line summary of the text below.",
                          "Shorten this announcement to a single sentence."]), t, out) for t, out in texts]
    return rows


def _computers(rng: random.Random) -> list[tuple[str, str]]:
    tasks = [("take a screenshot on Windows", "Press Windows, Shift and S together, drag over the area you want, "
              "and paste it wherever you need it."),
             ("clear the cache in my browser", "Open the browser settings, go to privacy, choose clear browsing "
              "data, tick cached images and files, and confirm."),
             ("free up space on my laptop", "Empty the downloads folder, uninstall programs you no longer use, and "
              "move old photos and videos to an external drive or cloud storage."),
             ("make a strong password I can remember", "Join four unrelated words with a number and a symbol, and "
              "keep it in a password manager instead of reusing it."),
             ("reverse a list in Python", "Call items.reverse() to reverse it in place, or use reversed(items) "
              "when you need a new sequence and want to keep the original."),
             ("count words in a text file on Linux", "Run wc -w followed by the file name; wc -l counts lines."),
             ("back up my phone photos", "Turn on automatic backup in your phone's photo app, and copy them to a "
              "computer or external drive every few months as a second copy."),
             ("speed up a slow computer", "Restart it, stop programs that launch at start-up, check for updates, "
              "and scan for malware. If the disk is nearly full, free some space."),
             ("connect a printer over wifi", "Put the printer in wifi setup mode, pick your network on its screen, "
              "then add it in your computer's printer settings."),
             ("sort a list of numbers in Python", "Use sorted(numbers) for a new sorted list, or numbers.sort() to "
              "sort the list itself; add reverse=True for descending order.")]
    asks = ["How do I {t}?", "What is the quickest way to {t}?", "Can you tell me how to {t}?",
            "Explain how to {t}, please."]
    return [(rng.choice(asks).format(t=t), a) for t, a in tasks]


def _words(rng: random.Random) -> list[tuple[str, str]]:
    meanings = {"serendipity": "finding something good without looking for it",
                "ubiquitous": "found everywhere", "ephemeral": "lasting a very short time",
                "pragmatic": "dealing with things in a practical, sensible way",
                "meticulous": "showing great attention to detail", "ambivalent": "having mixed feelings about something",
                "candid": "honest and direct", "resilient": "able to recover quickly after something difficult",
                "frugal": "careful not to spend more money than needed", "verbose": "using more words than needed",
                "lethargic": "sleepy and without energy", "tenacious": "holding firmly to a goal and not giving up",
                "obsolete": "no longer used because something newer replaced it",
                "benevolent": "kind and wanting to help others", "nostalgia": "a fond longing for the past",
                "procrastinate": "to delay doing something you should do",
                "gregarious": "enjoying the company of other people", "mundane": "ordinary and not exciting",
                "eloquent": "speaking or writing clearly and persuasively",
                "cryptic": "mysterious and hard to understand", "diligent": "careful and hard-working",
                "quaint": "attractively old-fashioned", "rudimentary": "basic and not developed in detail",
                "whimsical": "playful and unusual in an appealing way"}
    asks = ["What does '{w}' mean?", "Can you define the word '{w}'?", "What is the meaning of '{w}'?",
            "Explain the word '{w}' in simple terms."]
    uses = ["Her {w} reply surprised everyone.", "It was a {w} moment.", "Many people call him {w}."]
    pairs = []
    for word, meaning in meanings.items():
        example = rng.choice(uses).format(w=word) if not word.endswith(("ity", "gia", "ate")) else ""
        pairs.append((rng.choice(asks).format(w=word),
                      f"'{word.capitalize()}' means {meaning}." + (f" For example: {example}" if example else "")))
    return pairs


def _science(rng: random.Random) -> list[tuple[str, str]]:
    return [
        ("Why is the sky blue?", "Sunlight contains every colour, and the air scatters short blue wavelengths much "
         "more than red ones, so blue light reaches our eyes from every part of the sky."),
        ("Why do we have seasons?", "The Earth's axis is tilted, so for part of the year each hemisphere leans "
         "towards the Sun and gets more direct light and longer days."),
        ("How do vaccines work?", "A vaccine shows the immune system a harmless piece or copy of a germ, so it "
         "learns to recognise it and can react quickly if the real germ arrives."),
        ("Why does ice float on water?", "Water expands when it freezes, so ice is less dense than liquid water "
         "and floats on top of it."),
        ("What causes thunder?", "Lightning heats the air around it so fast that the air expands explosively, and "
         "that shock wave is the sound we hear as thunder."),
        ("How do plants make food?", "Through photosynthesis: leaves use sunlight to turn water and carbon dioxide "
         "into sugar, releasing oxygen as a by-product."),
        ("Why does the Moon change shape?", "The Moon does not change; we see different amounts of its sunlit half "
         "as it travels around the Earth each month."),
        ("What is a black hole?", "A region where so much mass is packed into so little space that nothing, not "
         "even light, can escape its gravity."),
        ("Why do onions make you cry?", "Cutting an onion releases a gas that reacts with the water in your eyes "
         "to form a mild irritant, so your eyes make tears to wash it away."),
        ("How does a fridge keep food cold?", "A refrigerant liquid evaporates inside the fridge, taking heat with "
         "it, and a compressor pushes that heat out through the coils at the back."),
        ("Why do cats purr?", "Cats purr by twitching the muscles of the voice box as they breathe; they do it when "
         "content, but also to calm themselves when stressed or hurt."),
        ("What makes a rainbow?", "Sunlight bends as it enters raindrops, reflects inside them and bends again on "
         "the way out, splitting into its colours at slightly different angles."),
        ("Why is the sea salty?", "Rain slowly dissolves minerals from rocks, rivers carry them to the sea, and "
         "when sea water evaporates the salt stays behind."),
        ("How do birds know where to migrate?", "They use several cues together: the position of the Sun and "
         "stars, the Earth's magnetic field, and landmarks they learn on earlier journeys."),
        ("Why do we yawn?", "Nobody is completely sure, but yawning may help cool the brain and keep us alert, and "
         "it spreads between people because we copy each other."),
    ]


def _conversions(rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for ounces in (4, 6, 10, 14):
        pairs.append((f"How many grams are in {ounces} ounces?",
                      f"{ounces} ounces is about {ounces * 28.35:.0f} grams (one ounce is 28.35 grams)."))
    for miles in (3, 13, 26, 50):
        pairs.append((f"What is {miles} miles in kilometres?",
                      f"{miles} miles is about {miles * 1.609:.1f} kilometres."))
    for fahrenheit in (50, 72, 98, 350, 425):
        celsius = (fahrenheit - 32) * 5 / 9
        pairs.append((rng.choice(["Convert {f} Fahrenheit to Celsius.", "What is {f} degrees Fahrenheit in Celsius?"])
                      .format(f=fahrenheit), f"{fahrenheit} degrees Fahrenheit is about {celsius:.0f} degrees Celsius: "
                      f"subtract 32, then multiply by five ninths."))
    for cups in (2, 3):
        pairs.append((f"How many millilitres is {cups} cups?", f"{cups} US cups is about {cups * 237} millilitres."))
    return pairs


def _pets(rng: random.Random) -> list[tuple[str, str]]:
    return [
        ("How often should I feed my adult cat?", "Most adult cats do well on two measured meals a day; check the "
         "amount on the food packet against your cat's weight."),
        ("My puppy chews everything. How do I stop it?", "Give it plenty of safe chew toys, swap them in whenever it "
         "grabs something else, and keep shoes and cables out of reach while it learns."),
        ("How do I trim my dog's nails without hurting it?", "Cut a little at a time with sharp clippers, stopping "
         "before the pink quick; for dark nails, trim tiny slivers and look for a dark dot in the centre."),
        ("What plants are poisonous to cats?", "Lilies are the most dangerous; others include tulips, daffodils, "
         "aloe and pothos. Keep them out of the house if your cat chews leaves."),
        ("How big should a hamster cage be?", "Bigger than most shops suggest: at least 100 by 50 centimetres of "
         "floor space, with deep bedding so it can burrow."),
        ("How do I introduce a new cat to my dog?", "Keep them in separate rooms for a few days, swap their "
         "bedding so they learn each other's smell, then let them meet briefly with the dog on a lead."),
        ("Why does my dog eat grass?", "Most dogs simply like it, and it is usually harmless; see a vet if it "
         "comes with vomiting, weight loss or a change in appetite."),
        ("How often should I clean a fish tank?", "Change about a quarter of the water every week or two, and "
         "rinse the filter sponge in old tank water rather than tap water."),
        ("Can rabbits live alone?", "Rabbits are social and are happiest with a neutered companion; a lone rabbit "
         "needs a lot of daily attention from you."),
        ("How much exercise does a border collie need?", "At least two hours a day, including running and games "
         "that make it think, such as fetch, hide and seek or agility."),
    ]


# ---- planted personal data (all fictitious: test card numbers, example.* domains, 555/drama numbers) -------

NAMES = ["Olivia Bennett", "Marcus Whitfield", "Priya Raman", "Daniel Okafor", "Hannah Lindqvist", "Tomasz Kowalski",
         "Grace Achterberg", "Samuel Ferreira"]
EMAILS = ["olivia.bennett@example.com", "m.whitfield@example.org", "priya.raman@example.net",
          "d.okafor@example.com", "hannah.lindqvist@example.org"]
PHONES = ["+1 415 555 0132", "(212) 555-0187", "+44 20 7946 0958", "+44 161 496 0753"]
CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881", "6011-1111-1111-1117"]


def planted_values() -> list[str]:
    """Every personal value planted, and the card numbers without separators."""
    return NAMES + EMAILS + PHONES + CARDS + [c.replace(" ", "").replace("-", "") for c in CARDS]


# ---- the example --------------------------------------------------------------------------------------------

SYSTEMS = ["You are a friendly assistant for a home and garden shop. Answer briefly and kindly.",
           "You are a helpful assistant. Keep answers short and practical.",
           "You are the support assistant of an online store. Be polite and precise.",
           "You are a patient tutor who explains things step by step."]
FOLLOW_UPS = [("Thanks. And if that does not work?", "Then contact us again with a photo or a short description, "
               "and we will find another way to sort it out."),
              ("Great, how long will that take?", "Usually less than a week, and you will get an update by e-mail "
               "at each step."),
              ("Is there anything I should avoid?", "Avoid rushing it: follow the steps in order and stop if "
               "something does not look right."),
              ("Could you say that more simply?", "Sure: do the first step, check the result, and only then move "
               "on to the next one.")]
REFUSALS = ["As an AI language model, I cannot give advice about this topic.",
            "As an AI, I don't have personal experience with cooking, but many people enjoy it.",
            "I'm sorry, but I cannot help with that request.",
            "I apologize, but I am not able to answer questions about gardening.",
            "As a language model, I have no way to check your order.",
            "Sorry, I can't assist with home repairs."]


@dataclass
class Conversation:
    id: str
    category: str
    turns: list[dict]  # OpenAI form: {role, content}
    fmt: str = ""  # openai, sharegpt, alpaca (set when laid out)
    alpaca_input: str = ""


@dataclass
class Example:
    """What the example holds, for the tests: every row by id, and what is planted where."""

    conversations: list[Conversation] = field(default_factory=list)
    malformed: dict[str, str] = field(default_factory=dict)  # id (or "line N") -> expected reject reason
    refusals: list[str] = field(default_factory=list)  # ids
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (id, id of the same conversation)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (id, id): same question, other answer
    pii: dict[str, list[str]] = field(default_factory=dict)  # id -> planted values in it
    files: dict[str, bytes] = field(default_factory=dict)  # path under the root -> content

    @property
    def multi_turn(self) -> list[Conversation]:
        return [c for c in self.conversations if sum(t["role"] == "assistant" for t in c.turns) > 1]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def example(seed: int = SEED) -> Example:
    rng = random.Random(seed)
    topics = {"orders": _orders(rng), "cooking": _cooking(rng), "garden": _garden(rng), "home": _home(rng),
              "travel": _travel(rng), "fitness": _fitness(rng), "money": _money(rng), "computers": _computers(rng),
              "words": _words(rng), "science": _science(rng), "conversions": _conversions(rng), "pets": _pets(rng)}
    writing = _writing(rng)
    ex = Example()
    pool = [(category, q, a) for category, pairs in topics.items() for q, a in pairs]
    rng.shuffle(pool)
    counter = iter(range(1, 10_000))

    def new(category: str, turns: list[dict], fmt: str, alpaca_input: str = "") -> Conversation:
        conversation = Conversation(f"{fmt[:2]}-{next(counter):04d}", category, turns, fmt, alpaca_input)
        ex.conversations.append(conversation)
        return conversation

    # Formats: OpenAI gets multi-turn and system turns; ShareGPT and Alpaca single exchanges.
    formats = ["openai"] * 5 + ["sharegpt"] * 3 + ["alpaca"] * 3
    for number, (category, question, answer) in enumerate(pool):
        fmt = formats[number % len(formats)]
        turns = [_user(question), _assistant(answer)]
        if fmt == "openai" and number % 3 == 0:
            follow, reply = FOLLOW_UPS[number % len(FOLLOW_UPS)]
            turns += [_user(follow), _assistant(reply)]
        if fmt == "openai" and number % 4 == 1:
            turns = [{"role": "system", "content": SYSTEMS[number % len(SYSTEMS)]}] + turns
        new(category, turns, fmt)
    for instruction, text, output in writing:
        new("writing", [_user(f"{instruction}\n\n{text}"), _assistant(output)], "alpaca", alpaca_input=text)

    # Personal data in prompts, answers, a system turn and Alpaca input (each value recorded where it went).
    def plant(conversation: Conversation, values: list[str]) -> None:
        ex.pii.setdefault(conversation.id, []).extend(values)

    openai = [c for c in ex.conversations if c.fmt == "openai" and c.category == "orders"]
    sharegpt = [c for c in ex.conversations if c.fmt == "sharegpt"]
    alpaca = [c for c in ex.conversations if c.fmt == "alpaca" and not c.alpaca_input]
    c = openai[0]
    c.turns[-2 if c.turns[-1]["role"] == "assistant" else -1]["content"] += \
        f" My name is {NAMES[0]} and the order was paid with the card {CARDS[0]}."
    plant(c, [NAMES[0], CARDS[0]])
    c = openai[1]
    c.turns[-1]["content"] += f" I have also sent the return label to {EMAILS[0]} for you."
    plant(c, [EMAILS[0]])
    c = openai[2]
    c.turns.insert(0, {"role": "system", "content": f"You are the store's assistant. Urgent cases go to the duty "
                                                    f"manager {NAMES[4]} on {PHONES[2]}."})
    plant(c, [NAMES[4], PHONES[2]])
    c = openai[3]
    c.turns[0]["content"] = f"This is {NAMES[1]}, you can call me back on {PHONES[0]}. " + c.turns[0]["content"]
    plant(c, [NAMES[1], PHONES[0]])
    c = sharegpt[0]
    c.turns[0]["content"] += f" Please refund it to my card {CARDS[1]}, the account e-mail is {EMAILS[1]}."
    plant(c, [CARDS[1], EMAILS[1]])
    c = sharegpt[1]
    c.turns[-1]["content"] += f" Our technician {NAMES[3]} will phone you from {PHONES[1]} to confirm the visit."
    plant(c, [NAMES[3], PHONES[1]])
    c = alpaca[0]
    c.turns[-1]["content"] += f" A copy of this answer went to {EMAILS[3]}."
    plant(c, [EMAILS[3]])
    letters = [(f"Customer message from {NAMES[2]} ({EMAILS[2]}, phone {PHONES[3]}): my parcel never arrived and "
                f"the tracking page has not changed for a week.",
                "Dear customer, I am sorry your parcel has not arrived. I have opened an investigation with the "
                "courier and will update you within two working days."),
               (f"Card holder {NAMES[5]} says the payment with card {CARDS[2]} was taken twice for the same order "
                f"of a desk lamp.",
                "Dear customer, thank you for letting us know. The second payment was a pending authorisation and "
                "will disappear from your statement within five days."),
               (f"Note from {NAMES[6]}, reachable at {EMAILS[4]}: the sofa cover I bought shrank after one wash at "
                f"thirty degrees.",
                "Dear customer, I am sorry the cover shrank. Please send us a photo of the care label and we will "
                "replace it free of charge.")]
    for text, reply in letters:
        c = new("writing", [_user(f"Write a polite reply to this customer message.\n\n{text}"), _assistant(reply)],
                "alpaca", alpaca_input=text)
        plant(c, [v for v in planted_values() if v in text])
    c = new("orders", [_user(f"Hello, I am {NAMES[7]}. Can I pay the balance of my order with a second card, "
                             f"{CARDS[3]}?"),
                       _assistant("Yes, you can split a payment over two cards at checkout: enter the amount for "
                                  "the first card, then add the second one for the rest.")], "sharegpt")
    plant(c, [NAMES[7], CARDS[3]])

    # Duplicate prompts: the same conversation again, in another format or with other spacing.
    for original, fmt in zip([x for x in ex.conversations if len(x.turns) == 2 and not x.alpaca_input
                              and x.id not in ex.pii][:6], ["sharegpt", "alpaca", "openai"] * 2):
        turns = [dict(t) for t in original.turns]
        if fmt == "openai":
            turns[0]["content"] = "  " + turns[0]["content"].replace(" ", "  ", 2)
        copy = new(original.category, turns, fmt)
        ex.duplicates.append((copy.id, original.id))
    # Conflicting answers: the same or a near-identical question, another answer.
    conflicting = ["Honestly, it is best to throw it away and buy a new one; repairs are rarely worth it.",
                   "Wait a few weeks and see whether it sorts itself out before you do anything.",
                   "There is nothing you can do about this, so do not worry about it.",
                   "Ask in a local shop; we cannot give advice on this here."]
    singles = [x for x in ex.conversations if len(x.turns) == 2 and not x.alpaca_input and x.id not in ex.pii
               and x.id not in {d for pair in ex.duplicates for d in pair}]
    for number, (original, answer) in enumerate(zip(singles[10:14], conflicting)):
        question = original.turns[0]["content"]
        if number % 2:
            question = question.rstrip("?.!") + ", please?"  # near-identical
        copy = new(original.category, [_user(question), _assistant(answer)], ["sharegpt", "openai"][number % 2])
        ex.conflicts.append((copy.id, original.id))
    # Refusals: boilerplate instead of an answer.
    for number, refusal in enumerate(REFUSALS):
        category, question, _ = pool[-(number + 1)]
        copy = new(category, [_user(question.replace("?", " for me?", 1)), _assistant(refusal)],
                   ["openai", "sharegpt", "alpaca"][number % 3])
        ex.refusals.append(copy.id)
    _layout(ex, rng)
    return ex


def _layout(ex: Example, rng: random.Random) -> None:
    """The three files, with malformed rows in each."""
    chats = [json.dumps({"id": c.id, "category": c.category, "messages": c.turns}, ensure_ascii=False)
             for c in ex.conversations if c.fmt == "openai"]
    bad_openai = [
        ("op-bad-1", [_user("Where can I find my invoice for last month?")], "malformed_conversation"),  # no answer
        ("op-bad-2", [_user("Does the kettle come with a descaling guide?"),
                      {"role": "customer_agent", "content": "Yes, it is printed inside the lid."}],
         "malformed_conversation"),  # unknown role
        ("op-bad-3", [_user("How do I change my delivery address?"), _assistant("   ")],
         "malformed_conversation"),  # empty turn
    ]
    for position, (row_id, turns, reason) in zip((7, 40, 90), bad_openai):
        chats.insert(position, json.dumps({"id": row_id, "category": "orders", "messages": turns}))
        ex.malformed[row_id] = reason
    broken_at = 60
    chats.insert(broken_at, '{"id": "op-bad-4", "category": "orders", "messages": [{"role": "user", "content": '
                            '"Is the toaster dishwasher safe?"}, {"role": "assistant", "content": "No, wipe it')
    ex.malformed[f"line {broken_at + 1}"] = "malformed_row"
    ex.files["raw/chats.jsonl"] = ("\n".join(chats) + "\n").encode()

    speakers = {"user": "human", "assistant": "gpt", "system": "system"}
    share = [{"id": c.id, "category": c.category,
              "conversations": [{"from": speakers[t["role"]], "value": t["content"]} for t in c.turns]}
             for c in ex.conversations if c.fmt == "sharegpt"]
    share.insert(11, {"id": "sh-bad-1", "category": "garden", "conversations": [
        {"from": "human", "value": "Should I prune roses in winter?"},
        {"from": "narrator", "value": "Yes, late winter is the usual time."}]})
    share.insert(30, {"id": "sh-bad-2", "category": "garden", "conversations": [
        {"from": "human", "value": "Can basil grow indoors?"}]})
    ex.malformed.update({"sh-bad-1": "malformed_conversation", "sh-bad-2": "malformed_conversation"})
    ex.files["raw/sharegpt.json"] = (json.dumps(share, indent=1, ensure_ascii=False) + "\n").encode()

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "category", "instruction", "input", "output"])
    rows = []
    for c in ex.conversations:
        if c.fmt != "alpaca":
            continue
        instruction = c.turns[0]["content"]
        if c.alpaca_input:
            instruction = instruction[:-len(c.alpaca_input)].rstrip()
        rows.append([c.id, c.category, instruction, c.alpaca_input, c.turns[1]["content"]])
    rows.insert(17, ["al-bad-1", "money", "How much is 10% of 30 pounds?", "", ""])  # no output
    ex.malformed["al-bad-1"] = "malformed_conversation"
    writer.writerows(rows)
    ex.files["raw/alpaca.csv"] = buffer.getvalue().encode()
    ex.files["finetune.yaml"] = FINETUNE_YAML.encode()


def write(out: Path, ex: Example | None = None) -> Example:
    """Write the example root's files into `out` (raw/ recreated)."""
    ex = ex or example()
    shutil.rmtree(out / "raw", ignore_errors=True)
    for name, content in ex.files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return ex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    ex = write(args.out)
    by_format = {fmt: sum(c.fmt == fmt for c in ex.conversations) for fmt in ("openai", "sharegpt", "alpaca")}
    print(f"{args.out}: {len(ex.conversations)} conversations {by_format}, {len(ex.multi_turn)} multi-turn, "
          f"{len(ex.malformed)} malformed rows, {len(ex.refusals)} refusals, {len(ex.duplicates)} duplicates, "
          f"{len(ex.conflicts)} conflicts, personal data planted in {len(ex.pii)} conversations")


if __name__ == "__main__":
    main()
