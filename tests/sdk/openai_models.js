// An agent that uses the OpenAI SDK as written for the real service: the key
// from OPENAI_API_KEY (a placeholder in an agent), the address from
// OPENAI_BASE_URL when set. Prints what the service answered, or the error.
const OpenAI = require(process.argv[2]);

const client = new OpenAI();
client
  .get("/models")
  .then((answer) => console.log(JSON.stringify({ ok: true, target: answer.target })))
  .catch((error) => {
    console.log(JSON.stringify({ ok: false, error: String(error) }));
    process.exit(1);
  });
