// Every field of the console's state, declared here and nowhere else; each module reads and writes these.
export const state = Object.seal({
  config: null, // config.json: the API's URL and the user pool
  session: null, // { idToken, username, groups, expiresAt } of the signed-in user
  expiryTimer: null, // signs out when the session expires
  challenge: null, // { name, session } of a Cognito challenge being answered
  file: null, // the image chosen or dropped on the inspect view
  classes: [], // the classes the models serve (GET /classes)
  dimensions: null, // classes and lines that have results (GET /stats)
  applied: null, // the results filter as it was applied
  items: [], // the results page shown
  token: null, // the next_token that loaded this page (null: the newest)
  nextToken: null, // the next_token of the older page
  tokens: [], // the tokens of the newer pages, to go back
  resultsSeq: 0, // the latest results request (older answers are dropped)
  countsSeq: 0, // the latest counts request
  histSeq: 0, // the latest score distribution request
  timer: null, // the results' auto-refresh
  detailOpen: false, // the detail dialog is open
  detailIndex: -1, // the result shown in it, as an index into items
  selectedId: null, // its inspection id
  queue: [], // the review queue's items
  queueAt: 0, // the one shown
  queueSeq: 0, // the latest queue request
  queueMore: false, // the queue goes on past the items loaded
  reviewed: [], // { item, verdict, defectType, note } of the reviews made in the queue, newest last: u withdraws the last
  defectTypes: {}, // per class, the defect types its reviews have used (GET /review-queue), offered when marking a defect
  models: {}, // GET /models's models
  modelsTimer: null, // asks GET /models again while an endpoint updates
}); // sealed: a field not declared here cannot be added (modules are strict)
