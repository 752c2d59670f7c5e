// One chat turn against our /api/chat, read the way a Next.js page with `useChat` reads it: the
// `ai` package's own DefaultChatTransport (what useChat sends and how it parses the stream) and
// readUIMessageStream (how useChat assembles the assistant's message from the parts).
//
//   node read_chat.mjs <base URL> <token> <message> [conversation id]
//
// Prints one JSON line: {"status", "message": <the last UIMessage>, "errors": [...]}.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [baseUrl, token, text, conversationId] = process.argv.slice(2);

// The page's transport: the token in the headers, the UI message stream asked for, and our body
// ({message, conversation_id}) made from the last user message.
const transport = new DefaultChatTransport({
  api: `${baseUrl}/api/chat`,
  headers: () => ({ Authorization: `Bearer ${token}`, Accept: "text/event-stream" }),
  prepareSendMessagesRequest: ({ messages, body }) => {
    const last = messages[messages.length - 1];
    const message = last.parts.filter((part) => part.type === "text").map((part) => part.text).join("");
    return { body: { message, ...(body?.conversation_id ? { conversation_id: body.conversation_id } : {}) } };
  },
});

const errors = [];
let message = null;
try {
  const stream = await transport.sendMessages({
    chatId: "chat-1",
    messages: [{ id: "user-1", role: "user", parts: [{ type: "text", text }] }],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    body: conversationId ? { conversation_id: Number(conversationId) } : undefined,
  });
  for await (const snapshot of readUIMessageStream({ stream, onError: (error) => errors.push(String(error.message ?? error)) })) {
    message = snapshot;
  }
} catch (error) {
  errors.push(String(error.message ?? error));
}
console.log(JSON.stringify({ message, errors }));
