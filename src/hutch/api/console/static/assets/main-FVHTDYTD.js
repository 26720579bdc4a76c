var me,S,Be,Ht,q,Fe,je,We,ye,ie,ee,ze,ke,xe,we,Bt,ce={},ue=[],jt=/acit|ex(?:s|g|n|p|$)|rph|grid|ows|mnc|ntw|ine[ch]|zoo|^ord|itera/i,fe=Array.isArray;function W(e,t){for(var o in t)e[o]=t[o];return e}function Se(e){e&&e.parentNode&&e.parentNode.removeChild(e)}function Te(e,t,o){var n,a,r,s={};for(r in t)r=="key"?n=t[r]:r=="ref"?a=t[r]:s[r]=t[r];if(arguments.length>2&&(s.children=arguments.length>3?me.call(arguments,2):o),typeof e=="function"&&e.defaultProps!=null)for(r in e.defaultProps)s[r]===void 0&&(s[r]=e.defaultProps[r]);return le(e,s,n,a,null)}function le(e,t,o,n,a){var r={type:e,props:t,key:o,ref:n,__k:null,__:null,__b:0,__e:null,__c:null,constructor:void 0,__v:a??++Be,__i:-1,__u:0};return a==null&&S.vnode!=null&&S.vnode(r),r}function he(e){return e.children}function de(e,t){this.props=e,this.context=t}function Y(e,t){if(t==null)return e.__?Y(e.__,e.__i+1):null;for(var o;t<e.__k.length;t++)if((o=e.__k[t])!=null&&o.__e!=null)return o.__e;return typeof e.type=="function"?Y(e):null}function Wt(e){if(e.__P&&e.__d){var t=e.__v,o=t.__e,n=[],a=[],r=W({},t);r.__v=t.__v+1,S.vnode&&S.vnode(r),Ee(e.__P,r,t,e.__n,e.__P.namespaceURI,32&t.__u?[o]:null,n,o??Y(t),!!(32&t.__u),a),r.__v=t.__v,r.__.__k[r.__i]=r,Ve(n,r,a),t.__e=t.__=null,r.__e!=o&&qe(r)}}function qe(e){if((e=e.__)!=null&&e.__c!=null)return e.__e=e.__c.base=null,e.__k.some(function(t){if(t!=null&&t.__e!=null)return e.__e=e.__c.base=t.__e}),qe(e)}function Me(e){(!e.__d&&(e.__d=!0)&&q.push(e)&&!pe.__r++||Fe!=S.debounceRendering)&&((Fe=S.debounceRendering)||je)(pe)}function pe(){try{for(var e,t=1;q.length;)q.length>t&&q.sort(We),e=q.shift(),t=q.length,Wt(e)}finally{q.length=pe.__r=0}}function Ye(e,t,o,n,a,r,s,u,d,c,p){var h,i,f,m,b,y,x=n&&n.__k||ue,v=t.length;for(d=zt(o,t,x,d,v),h=0;h<v;h++)(f=o.__k[h])!=null&&(i=f.__i!=-1&&x[f.__i]||ce,f.__i=h,y=Ee(e,f,i,a,r,s,u,d,c,p),m=f.__e,f.ref&&i.ref!=f.ref&&(i.ref&&Ce(i.ref,null,f),p.push(f.ref,f.__c||m,f)),b==null&&m!=null&&(b=m),4&f.__u?(d=Ke(f,d,e),i.__e&&(i.__e=null)):typeof f.type=="function"&&y!==void 0?d=y:m&&(d=m.nextSibling),f.__u&=-7);return o.__e=b,d}function zt(e,t,o,n,a){var r,s,u,d,c,p=o.length,h=p,i=0;for(e.__k=new Array(a),r=0;r<a;r++)(s=t[r])!=null&&typeof s!="boolean"&&typeof s!="function"?(typeof s=="string"||typeof s=="number"||typeof s=="bigint"||s.constructor==String?s=e.__k[r]=le(null,s,null,null,null):fe(s)?s=e.__k[r]=le(he,{children:s},null,null,null):s.constructor===void 0&&s.__b>0?s=e.__k[r]=le(s.type,s.props,s.key,s.ref?s.ref:null,s.__v):e.__k[r]=s,d=r+i,s.__=e,s.__b=e.__b+1,u=null,(c=s.__i=qt(s,o,d,h))!=-1&&(h--,(u=o[c])&&(u.__u|=2)),u==null||u.__v==null?(c==-1&&(a>p?i--:a<p&&i++),typeof s.type!="function"&&(s.__u|=4)):c!=d&&(c==d-1?i--:c==d+1?i++:(c>d?i--:i++,s.__u|=4))):e.__k[r]=null;if(h)for(r=0;r<p;r++)(u=o[r])!=null&&(2&u.__u)==0&&(u.__e==n&&(n=Y(u)),Xe(u,u));return n}function Ke(e,t,o){var n,a;if(typeof e.type=="function"){for(n=e.__k,a=0;n&&a<n.length;a++)n[a]&&(n[a].__=e,t=Ke(n[a],t,o));return t}e.__e!=t&&(t&&e.type&&!t.parentNode&&(t=Y(e)),t=o.insertBefore(e.__e,t||null));do t=t&&t.nextSibling;while(t!=null&&t.nodeType==8);return t}function qt(e,t,o,n){var a,r,s,u=e.key,d=e.type,c=t[o],p=c!=null&&(2&c.__u)==0;if(c===null&&u==null||p&&u==c.key&&d==c.type)return o;if(n>(p?1:0)){for(a=o-1,r=o+1;a>=0||r<t.length;)if((c=t[s=a>=0?a--:r++])!=null&&(2&c.__u)==0&&u==c.key&&d==c.type)return s}return-1}function Ue(e,t,o){t[0]=="-"?e.setProperty(t,o??""):e[t]=o==null?"":typeof o!="number"||jt.test(t)?o:o+"px"}function se(e,t,o,n,a){var r,s;e:if(t=="style")if(typeof o=="string")e.style.cssText=o;else{if(typeof n=="string"&&(e.style.cssText=n=""),n)for(t in n)o&&t in o||Ue(e.style,t,"");if(o)for(t in o)n&&o[t]==n[t]||Ue(e.style,t,o[t])}else if(t[0]=="o"&&t[1]=="n")r=t!=(t=t.replace(ze,"$1")),s=t.toLowerCase(),t=s in e||t=="onFocusOut"||t=="onFocusIn"?s.slice(2):t.slice(2),e.l||(e.l={}),e.l[t+r]=o,o?n?o[ee]=n[ee]:(o[ee]=ke,e.addEventListener(t,r?we:xe,r)):e.removeEventListener(t,r?we:xe,r);else{if(a=="http://www.w3.org/2000/svg")t=t.replace(/xlink(H|:h)/,"h").replace(/sName$/,"s");else if(t!="width"&&t!="height"&&t!="href"&&t!="list"&&t!="form"&&t!="tabIndex"&&t!="download"&&t!="rowSpan"&&t!="colSpan"&&t!="role"&&t!="popover"&&t in e)try{e[t]=o??"";break e}catch{}typeof o=="function"||(o==null||o===!1&&t[4]!="-"?e.removeAttribute(t):e.setAttribute(t,t=="popover"&&o==1?"":o))}}function He(e){return function(t){if(this.l){var o=this.l[t.type+e];if(t[ie]==null)t[ie]=ke++;else if(t[ie]<o[ee])return;return o(S.event?S.event(t):t)}}}function Ee(e,t,o,n,a,r,s,u,d,c){var p,h,i,f,m,b,y,x,v,R,A,M,Z,Re,ae,ve,H=t.type;if(t.constructor!==void 0)return null;128&o.__u&&(d=!!(32&o.__u),r=[u=t.__e=o.__e]),(p=S.__b)&&p(t);e:if(typeof H=="function"){h=s.length;try{if(v=t.props,R=H.prototype&&H.prototype.render,A=(p=H.contextType)&&n[p.__c],M=p?A?A.props.value:p.__:n,o.__c?x=(i=t.__c=o.__c).__=i.__E:(R?t.__c=i=new H(v,M):(t.__c=i=new de(v,M),i.constructor=H,i.render=Kt),A&&A.sub(i),i.state||(i.state={}),i.__n=n,f=i.__d=!0,i.__h=[],i._sb=[]),R&&i.__s==null&&(i.__s=i.state),R&&H.getDerivedStateFromProps!=null&&(i.__s==i.state&&(i.__s=W({},i.__s)),W(i.__s,H.getDerivedStateFromProps(v,i.__s))),m=i.props,b=i.state,i.__v=t,f)R&&H.getDerivedStateFromProps==null&&i.componentWillMount!=null&&i.componentWillMount(),R&&i.componentDidMount!=null&&i.__h.push(i.componentDidMount);else{if(R&&H.getDerivedStateFromProps==null&&v!==m&&i.componentWillReceiveProps!=null&&i.componentWillReceiveProps(v,M),t.__v==o.__v||!i.__e&&i.shouldComponentUpdate!=null&&i.shouldComponentUpdate(v,i.__s,M)===!1){t.__v!=o.__v&&(i.props=v,i.state=i.__s,i.__d=!1),t.__e=o.__e,t.__k=o.__k,t.__k.some(function(J){J&&(J.__=t)}),ue.push.apply(i.__h,i._sb),i._sb=[],i.__h.length&&s.push(i),u=Y(o);break e}i.componentWillUpdate!=null&&i.componentWillUpdate(v,i.__s,M),R&&i.componentDidUpdate!=null&&i.__h.push(function(){i.componentDidUpdate(m,b,y)})}if(i.context=M,i.props=v,i.__P=e,i.__e=!1,Z=S.__r,Re=0,R)i.state=i.__s,i.__d=!1,Z&&Z(t),p=i.render(i.props,i.state,i.context),ue.push.apply(i.__h,i._sb),i._sb=[];else do i.__d=!1,Z&&Z(t),p=i.render(i.props,i.state,i.context),i.state=i.__s;while(i.__d&&++Re<25);i.state=i.__s,i.getChildContext!=null&&(n=W(W({},n),i.getChildContext())),R&&!f&&i.getSnapshotBeforeUpdate!=null&&(y=i.getSnapshotBeforeUpdate(m,b)),ae=p!=null&&p.type===he&&p.key==null?Je(p.props.children):p,u=Ye(e,fe(ae)?ae:[ae],t,o,n,a,r,s,u,d,c),i.base=t.__e,t.__u&=-161,i.__h.length&&s.push(i),x&&(i.__E=i.__=null)}catch(J){if(s.length=h,t.__v=null,d||r!=null){if(J.then){for(t.__u|=d?160:128;u&&u.nodeType==8&&u.nextSibling;)u=u.nextSibling;r!=null&&(r[r.indexOf(u)]=null),t.__e=u}else if(r!=null)for(ve=r.length;ve--;)Se(r[ve])}else t.__e=o.__e;t.__k==null&&(t.__k=o.__k||[]),J.then||Ge(t),S.__e(J,t,o)}}else r==null&&t.__v==o.__v?(t.__k=o.__k,t.__e=o.__e):u=t.__e=Yt(o.__e,t,o,n,a,r,s,d,c);return(p=S.diffed)&&p(t),128&t.__u?void 0:u}function Ge(e){e&&(e.__c&&(e.__c.__e=!0),e.__k&&e.__k.some(Ge))}function Ve(e,t,o){for(var n=0;n<o.length;n++)Ce(o[n],o[++n],o[++n]);S.__c&&S.__c(t,e),e.some(function(a){try{e=a.__h,a.__h=[],e.some(function(r){r.call(a)})}catch(r){S.__e(r,a.__v)}})}function Je(e){return typeof e!="object"||e==null||e.__b>0?e:fe(e)?e.map(Je):e.constructor!==void 0?null:W({},e)}function Yt(e,t,o,n,a,r,s,u,d){var c,p,h,i,f,m,b,y=o.props||ce,x=t.props,v=t.type;if(v=="svg"?a="http://www.w3.org/2000/svg":v=="math"?a="http://www.w3.org/1998/Math/MathML":a||(a="http://www.w3.org/1999/xhtml"),r!=null){for(c=0;c<r.length;c++)if((f=r[c])&&"setAttribute"in f==!!v&&(v?f.localName==v:f.nodeType==3)){e=f,r[c]=null;break}}if(e==null){if(v==null)return document.createTextNode(x);e=document.createElementNS(a,v,x.is&&x),u&&(S.__m&&S.__m(t,r),u=!1),r=null}if(v==null)y===x||u&&e.data==x||(e.data=x);else{if(r=v=="textarea"&&x.defaultValue!=null?null:r&&me.call(e.childNodes),!u&&r!=null)for(y={},c=0;c<e.attributes.length;c++)y[(f=e.attributes[c]).name]=f.value;for(c in y)f=y[c],c=="dangerouslySetInnerHTML"?h=f:c=="children"||c in x||c=="value"&&"defaultValue"in x||c=="checked"&&"defaultChecked"in x||se(e,c,null,f,a);for(c in x)f=x[c],c=="children"?i=f:c=="dangerouslySetInnerHTML"?p=f:c=="value"?m=f:c=="checked"?b=f:u&&typeof f!="function"||y[c]===f||se(e,c,f,y[c],a);if(p)u||h&&(p.__html==h.__html||p.__html==e.innerHTML)||(e.innerHTML=p.__html),t.__k=[];else if(h&&(e.innerHTML=""),Ye(t.type=="template"?e.content:e,fe(i)?i:[i],t,o,n,v=="foreignObject"?"http://www.w3.org/1999/xhtml":a,r,s,r?r[0]:o.__k&&Y(o,0),u,d),r!=null)for(c=r.length;c--;)Se(r[c]);u&&v!="textarea"||(c="value",v=="progress"&&m==null?e.removeAttribute("value"):m!=null&&(m!==e[c]||v=="progress"&&!m||v=="option"&&m!=y[c])&&se(e,c,m,y[c],a),c="checked",b!=null&&b!=e[c]&&se(e,c,b,y[c],a))}return e}function Ce(e,t,o){try{if(typeof e=="function"){var n=typeof e.__u=="function";n&&e.__u(),n&&t==null||(e.__u=e(t))}else e.current=t}catch(a){S.__e(a,o)}}function Xe(e,t,o){var n,a;if(S.unmount&&S.unmount(e),(n=e.ref)&&(n.current&&n.current!=e.__e||Ce(n,null,t)),(n=e.__c)!=null){if(n.componentWillUnmount)try{n.componentWillUnmount()}catch(r){S.__e(r,t)}n.base=n.__P=n.__n=null}if(n=e.__k)for(a=0;a<n.length;a++)n[a]&&Xe(n[a],t,o||typeof e.type!="function");o||Se(e.__e),e.__c=e.__=e.__e=void 0}function Kt(e,t,o){return this.constructor(e,o)}function Qe(e,t,o){var n,a,r,s;t==document&&(t=document.documentElement),S.__&&S.__(e,t),a=(n=typeof o=="function")?null:o&&o.__k||t.__k,r=[],s=[],Ee(t,e=(!n&&o||t).__k=Te(he,null,[e]),a||ce,ce,t.namespaceURI,!n&&o?[o]:a?null:t.firstChild?me.call(t.childNodes):null,r,!n&&o?o:a?a.__e:t.firstChild,n,s),Ve(r,e,s),e.props.children=null}me=ue.slice,S={__e:function(e,t,o,n){for(var a,r,s;t=t.__;)if((a=t.__c)&&!a.__)try{if((r=a.constructor)&&r.getDerivedStateFromError!=null&&(a.setState(r.getDerivedStateFromError(e)),s=a.__d),a.componentDidCatch!=null&&(a.componentDidCatch(e,n||{}),s=a.__d),s)return a.__E=a}catch(u){e=u}throw e}},Be=0,Ht=function(e){return e!=null&&e.constructor===void 0},de.prototype.setState=function(e,t){var o;o=this.__s!=null&&this.__s!=this.state?this.__s:this.__s=W({},this.state),typeof e=="function"&&(e=e(W({},o),this.props)),e&&W(o,e),e!=null&&this.__v&&(t&&this._sb.push(t),Me(this))},de.prototype.forceUpdate=function(e){this.__v&&(this.__e=!0,e&&this.__h.push(e),Me(this))},de.prototype.render=he,q=[],je=typeof Promise=="function"?Promise.prototype.then.bind(Promise.resolve()):setTimeout,We=function(e,t){return e.__v.__b-t.__v.__b},pe.__r=0,ye=Math.random().toString(8),ie="__d"+ye,ee="__a"+ye,ze=/(PointerCapture)$|Capture$/i,ke=0,xe=He(!1),we=He(!0),Bt=0;var te,C,Ne,Ze,oe=0,it=[],I=S,et=I.__b,tt=I.__r,ot=I.diffed,nt=I.__c,rt=I.unmount,at=I.__;function De(e,t){I.__h&&I.__h(C,e,oe||t),oe=0;var o=C.__H||(C.__H={__:[],__h:[]});return e>=o.__.length&&o.__.push({}),o.__[e]}function _(e){return oe=1,Gt(ut,e)}function Gt(e,t,o){var n=De(te++,2);if(n.t=e,!n.__c&&(n.__=[o?o(t):ut(void 0,t),function(u){var d=n.__N?n.__N[0]:n.__[0],c=n.t(d,u);d!==c&&(n.__N=[c,n.__[1]],n.__c.setState({}))}],n.__c=C,!C.__f)){var a=function(u,d,c){if(!n.__c.__H)return!0;var p=!1,h=n.__c.props!==u;if(n.__c.__H.__.some(function(f){if(f.__N){p=!0;var m=f.__[0];f.__=f.__N,f.__N=void 0,m!==f.__[0]&&(h=!0)}}),r){var i=r.call(this,u,d,c);return p?i||h:i}return!p||h};C.__f=!0;var r=C.shouldComponentUpdate,s=C.componentWillUpdate;C.componentWillUpdate=function(u,d,c){if(this.__e){var p=r;r=void 0,a(u,d,c),r=p}s&&s.call(this,u,d,c)},C.shouldComponentUpdate=a}return n.__N||n.__}function O(e,t){var o=De(te++,3);!I.__s&&ct(o.__H,t)&&(o.__=e,o.u=t,C.__H.__h.push(o))}function X(e){return oe=5,lt(function(){return{current:e}},[])}function lt(e,t){var o=De(te++,7);return ct(o.__H,t)&&(o.__=e(),o.__H=t,o.__h=e),o.__}function dt(e,t){return oe=8,lt(function(){return e},t)}function Vt(){for(var e;e=it.shift();){var t=e.__H;if(e.__P&&t)try{t.__h.some(_e),t.__h.some(Ie),t.__h=[]}catch(o){t.__h=[],I.__e(o,e.__v)}}}I.__b=function(e){C=null,et&&et(e)},I.__=function(e,t){e&&t.__k&&t.__k.__m&&(e.__m=t.__k.__m),at&&at(e,t)},I.__r=function(e){tt&&tt(e),te=0;var t=(C=e.__c).__H;t&&(Ne===C?(t.__h=[],C.__h=[],t.__.some(function(o){o.__N&&(o.__=o.__N),o.u=o.__N=void 0})):(t.__h.some(_e),t.__h.some(Ie),t.__h=[],te=0)),Ne=C},I.diffed=function(e){ot&&ot(e);var t=e.__c;t&&t.__H&&(t.__H.__h.length&&(it.push(t)!==1&&Ze===I.requestAnimationFrame||((Ze=I.requestAnimationFrame)||Jt)(Vt)),t.__H.__.some(function(o){o.u&&(o.__H=o.u,o.u=void 0)})),Ne=C=null},I.__c=function(e,t){t.some(function(o){try{o.__h.some(_e),o.__h=o.__h.filter(function(n){return!n.__||Ie(n)})}catch(n){t.some(function(a){a.__h&&(a.__h=[])}),t=[],I.__e(n,o.__v)}}),nt&&nt(e,t)},I.unmount=function(e){rt&&rt(e);var t,o=e.__c;o&&o.__H&&(o.__H.__.some(function(n){try{_e(n)}catch(a){t=a}}),o.__H=void 0,t&&I.__e(t,o.__v))};var st=typeof requestAnimationFrame=="function";function Jt(e){var t,o=function(){clearTimeout(n),st&&cancelAnimationFrame(t),setTimeout(e)},n=setTimeout(o,35);st&&(t=requestAnimationFrame(o))}function _e(e){var t=C,o=e.__c;typeof o=="function"&&(e.__c=void 0,o()),C=t}function Ie(e){var t=C;e.__c=e.__(),C=t}function ct(e,t){return!e||e.length!==t.length||t.some(function(o,n){return o!==e[n]})}function ut(e,t){return typeof t=="function"?t(e):t}var Pe="hutch.key",B={key:()=>sessionStorage.getItem(Pe),set:e=>sessionStorage.setItem(Pe,e),clear:()=>sessionStorage.removeItem(Pe)},K=class extends Error{constructor(t,o,n={}){super(o),this.status=t,this.fields=n}};function pt(e){return typeof e=="string"?e:JSON.stringify(e)}async function Xt(e){let t=`${e.status} ${e.statusText}`,o={};try{let n=await e.json();n&&n.status==="fail"&&n.data&&typeof n.data=="object"?(o=n.data,t=Object.entries(n.data).map(([a,r])=>a==="message"?pt(r):`${a}: ${pt(r)}`).join("; ")):n&&n.message&&(t=n.message)}catch{}return new K(e.status,t,o)}async function G(e,t,{body:o,raw:n,signal:a,key:r}={}){let s={"X-Api-Key":r||B.key()||""},u;n!==void 0?(u=n,s["Content-Type"]="application/octet-stream"):o!==void 0&&(u=JSON.stringify(o),s["Content-Type"]="application/json");let d;try{d=await fetch(t,{method:e,headers:s,body:u,signal:a})}catch(c){throw c.name==="AbortError"?c:new K(0,`hutch cannot be reached (${c.message})`)}if(!d.ok)throw await Xt(d);return d}async function w(e,t,o){return(await(await G(e,t,o)).json()).data}var E=(e,t)=>w("GET",e,t);async function L(e,t=1e3){let o=[],n=e.includes("?")?"&":"?";for(let a=0;a<t;a+=500){let r=await E(`${e}${n}limit=500&offset=${a}`);if(o.push(...r.data),r.data.length<500)break}return o}async function be(e,t,o){let a=(await G("GET",e,{signal:o})).body.getReader(),r=new TextDecoder,s="";for(;;){let{done:u,value:d}=await a.read();if(u)break;s+=r.decode(d,{stream:!0});let c;for(;(c=s.indexOf(`
`))>=0;){let p=s.slice(0,c).trim();s=s.slice(c+1),p&&t(JSON.parse(p))}}}function mt(e){return`${location.protocol==="https:"?"wss:":"ws:"}//${location.host}${e}`}function ft(){return["hutch",`hutch.key.${B.key()}`]}var g=encodeURIComponent;function F(e){if(e==null)return"\u2013";let t=["B","KiB","MiB","GiB","TiB"],o=0,n=e;for(;Math.abs(n)>=1024&&o<t.length-1;)n/=1024,o+=1;return`${n.toFixed(o===0?0:1)} ${t[o]}`}function N(e){return e?new Date(e).toLocaleString(void 0,{dateStyle:"short",timeStyle:"medium"}):"\u2013"}var _t=function(e,t,o,n){var a;t[0]=0;for(var r=1;r<t.length;r++){var s=t[r++],u=t[r]?(t[0]|=s?1:2,o[t[r++]]):t[++r];s===3?n[0]=u:s===4?n[1]=Object.assign(n[1]||{},u):s===5?(n[1]=n[1]||{})[t[++r]]=u:s===6?n[1][t[++r]]+=u+"":s?(a=e.apply(u,_t(e,u,o,["",null])),n.push(a),u[0]?t[0]|=2:(t[r-2]=0,t[r]=a)):n.push(u)}return n},ht=new Map;function bt(e){var t=ht.get(this);return t||(t=new Map,ht.set(this,t)),(t=_t(this,t.get(e)||(t.set(e,t=(function(o){for(var n,a,r=1,s="",u="",d=[0],c=function(i){r===1&&(i||(s=s.replace(/^\s*\n\s*|\s*\n\s*$/g,"")))?d.push(0,i,s):r===3&&(i||s)?(d.push(3,i,s),r=2):r===2&&s==="..."&&i?d.push(4,i,0):r===2&&s&&!i?d.push(5,0,!0,s):r>=5&&((s||!i&&r===5)&&(d.push(r,0,s,a),r=6),i&&(d.push(r,i,0,a),r=6)),s=""},p=0;p<o.length;p++){p&&(r===1&&c(),c(p));for(var h=0;h<o[p].length;h++)n=o[p][h],r===1?n==="<"?(c(),d=[d],r=3):s+=n:r===4?s==="--"&&n===">"?(r=1,s=""):s=n+s[0]:u?n===u?u="":s+=n:n==='"'||n==="'"?u=n:n===">"?(c(),r=1):r&&(n==="="?(r=5,a=s,s=""):n==="/"&&(r<5||o[p][h+1]===">")?(c(),r===3&&(d=d[0]),r=d,(d=d[0]).push(2,0,r),r=0):n===" "||n==="	"||n===`
`||n==="\r"?(c(),r=2):s+=n),r===3&&s==="!--"&&(r=4,d=d[0])}return c(),d})(e)),t),arguments,[])).length>1?t:t[0]}var l=bt.bind(Te);function U(...e){location.hash="#/"+e.map(encodeURIComponent).join("/")}function k(e,t,o=0){let[n,a]=_({data:null,error:null,loading:!0}),r=X(!0),s=dt(async()=>{try{let u=await e();r.current&&a({data:u,error:null,loading:!1})}catch(u){r.current&&u.name!=="AbortError"&&a(d=>({data:d.data,error:u,loading:!1}))}},t);return O(()=>{r.current=!0,a({data:null,error:null,loading:!0}),s();let u=o?setInterval(s,o):null;return()=>{r.current=!1,u&&clearInterval(u)}},[s]),{...n,reload:s}}function P(){let[e,t]=_(!1),[o,n]=_(null);return{busy:e,error:o,run:async r=>{t(!0),n(null);try{return await r()}catch(s){n(s);return}finally{t(!1)}},setError:n}}function $({error:e}){if(!e)return null;let t=e.status?` (${e.status})`:"";return l`<p class="problem" role="alert">${e.message}${t}</p>`}function D({what:e}){return l`<p class="muted" aria-live="polite">Loading ${e}…</p>`}function V({value:e}){return l`<span class=${`status status-${e}`}>${e}</span>`}function j({label:e,confirm:t,onConfirm:o,disabled:n}){let[a,r]=_(!1);return a?l`<span class="confirm">
    <button type="button" class="danger" onClick=${()=>{r(!1),o()}}>
      ${t}</button>
    <button type="button" onClick=${()=>r(!1)}>Cancel</button>
  </span>`:l`<button type="button" class="danger" disabled=${n}
      onClick=${()=>r(!0)}>${e}</button>`}function $t({tabs:e,current:t,onSelect:o,label:n}){return l`<div class="tabs" role="tablist" aria-label=${n} onKeyDown=${r=>{let s=e.findIndex(c=>c.id===t),u={ArrowRight:1,ArrowLeft:-1}[r.key];if(!u)return;r.preventDefault();let d=e[(s+u+e.length)%e.length];o(d.id),requestAnimationFrame(()=>document.getElementById(`tab-${d.id}`)?.focus())}}>
    ${e.map(r=>l`<button type="button" role="tab" id=${`tab-${r.id}`}
      aria-selected=${r.id===t} aria-controls=${`panel-${r.id}`}
      tabindex=${r.id===t?0:-1} onClick=${()=>o(r.id)}>${r.label}</button>`)}
  </div>`}function T({label:e,id:t,hint:o,children:n}){return l`<div class="field">
    <label for=${t}>${e}</label>
    ${n}
    ${o?l`<small id=${`${t}-hint`} class="muted">${o}</small>`:null}
  </div>`}var $e=600,ne=160,Q=4;function z({title:e,series:t,times:o,max:n,format:a}){let r=t.flatMap(f=>f.values).filter(f=>f!=null),s=n??Math.max(1,...r),u=o.length,d=f=>u<=1?$e/2:Q+f*($e-2*Q)/(u-1),c=f=>ne-Q-Math.min(f,s)/s*(ne-2*Q),p=t.map(f=>`${f.label} ${a(f.values[f.values.length-1])}`).join(", "),h=u>1?Math.round((o[u-1]-o[0])/1e3):0,i=u?`${e}: ${u} samples over ${h} s; now ${p}; scale 0 to ${a(s)}.`:`${e}: no samples yet.`;return l`<figure class="chart">
    <figcaption><strong>${e}</strong> <span class="muted">${u?p:"no samples yet"}</span></figcaption>
    <svg viewBox=${`0 0 ${$e} ${ne}`} preserveAspectRatio="none" role="img" aria-label=${i}
      data-samples=${u}>
      <line class="axis" x1="0" y1=${ne-Q} x2=${$e} y2=${ne-Q} />
      ${t.map(f=>{let m=f.values.map((b,y)=>b==null?null:`${d(y).toFixed(1)},${c(b).toFixed(1)}`).filter(Boolean);return l`<polyline class=${`line ${f.className}`} points=${m.join(" ")}
          data-points=${m.length} vector-effect="non-scaling-stroke" />`})}
    </svg>
    <p class="legend">${t.map(f=>l`<span class=${`key ${f.className}`}>${f.label}</span>`)}
      <span class="muted"> · top ${a(s)}</span></p>
  </figure>`}function re(e,t=""){O(()=>{let o=new AbortController,n=null,a=async()=>{try{await be(`/v1/events?follow=true&since=${g(new Date().toISOString())}${t}`,r=>r.type!=="heartbeat"&&e(r),o.signal)}catch(r){if(r.name==="AbortError")return}o.signal.aborted||(n=setTimeout(a,3e3))};return a(),()=>{o.abort(),clearTimeout(n)}},[t])}function Ae({sandbox:e,onChanged:t,onDeleted:o}){let n=P(),a=`/v1/sandboxes/${g(e.id)}`,r=c=>n.run(async()=>{await c(),t?.()}),s=e.status==="running",u=e.status==="paused",d=e.name||e.id;return l`<span class="actions">
    ${s&&l`<button type="button" disabled=${n.busy} aria-label=${`Pause ${d}`}
      onClick=${()=>r(()=>w("POST",`${a}/pause`))}>Pause</button>`}
    ${u&&l`<button type="button" disabled=${n.busy} aria-label=${`Resume ${d}`}
      onClick=${()=>r(()=>w("POST",`${a}/resume`))}>Resume</button>`}
    ${u&&l`<button type="button" disabled=${n.busy} aria-label=${`Fork ${d}`}
      onClick=${()=>n.run(async()=>{let c=await w("POST",`${a}/fork`,{body:{}});U("sandboxes",c.id)})}>Fork</button>`}
    ${e.status!=="destroyed"&&l`<${j} label="Delete" confirm=${`Delete ${d}`}
      disabled=${n.busy}
      onConfirm=${()=>n.run(async()=>{await w("DELETE",a),(o||t)?.()})} />`}
    <${$} error=${n.error} />
  </span>`}function Qt({onCreated:e}){let t=k(async()=>{let[m,b,y,x,v]=await Promise.all([L("/v1/shapes"),E("/v1/rootfs"),L("/v1/templates"),L("/v1/networks"),L("/v1/disks")]);return{shapes:m,rootfs:b,templates:y.filter(R=>R.status==="ready"),networks:x,disks:v}},[]),[o,n]=_({name:"",shape:"",rootfs:"",runtime:"",egress:"",networks:[],disk:"",mount:"/mnt/disk"}),a=P(),r=m=>b=>n({...o,[m]:b.target.value});if(t.error)return l`<${$} error=${t.error} />`;if(!t.data)return l`<${D} what="the create form" />`;let{shapes:s,rootfs:u,templates:d,networks:c,disks:p}=t.data,h=o.shape||s[0]?.id,i=m=>n({...o,networks:o.networks.includes(m)?o.networks.filter(b=>b!==m):[...o.networks,m]});return l`<form class="card create" onSubmit=${m=>{m.preventDefault(),a.run(async()=>{let b={shape:h};o.name.trim()&&(b.name=o.name.trim()),o.rootfs&&(b.rootfs=o.rootfs),o.runtime&&(b.runtime=o.runtime);let y=o.egress.split(`
`).map(v=>v.trim()).filter(Boolean);y.length&&(b.egress=y),o.networks.length&&(b.networks=o.networks.map(v=>({id:v}))),o.disk&&(b.disks=[{disk_id:o.disk,mount_path:o.mount}]);let x=await w("POST","/v1/sandboxes",{body:b});e(x)})}} aria-labelledby="create-title">
    <h3 id="create-title">New sandbox</h3>
    <div class="grid">
      <${T} label="Name" id="create-name" hint="Optional; also the hostname.">
        <input id="create-name" value=${o.name} onInput=${r("name")} maxlength="63"
          aria-describedby="create-name-hint" />
      </${T}>
      <${T} label="Shape" id="create-shape">
        <select id="create-shape" value=${h} onChange=${r("shape")}>
          ${s.map(m=>l`<option value=${m.id}>${m.id} (${m.vcpu} vCPU, ${m.mem_mib} MiB)</option>`)}
        </select>
      </${T}>
      <${T} label="Image or template" id="create-rootfs">
        <select id="create-rootfs" value=${o.rootfs} onChange=${r("rootfs")}>
          <option value="">${u.default} (default)</option>
          <optgroup label="Images">
            ${u.rootfs.map(m=>l`<option value=${m}>${m}</option>`)}
          </optgroup>
          ${d.length>0&&l`<optgroup label="Your templates">
            ${d.map(m=>l`<option value=${m.id}>${m.name} v${m.version}</option>`)}
          </optgroup>`}
        </select>
      </${T}>
      <${T} label="Runtime" id="create-runtime">
        <select id="create-runtime" value=${o.runtime} onChange=${r("runtime")}>
          <option value="">default</option><option value="runc">runc</option>
          <option value="gvisor">gvisor</option>
        </select>
      </${T}>
      <${T} label="Egress rules" id="create-egress" hint="One a line (e.g. example.com, 198.51.100.0/24:443); empty: the default.">
        <textarea id="create-egress" rows="3" value=${o.egress} onInput=${r("egress")}
          aria-describedby="create-egress-hint"></textarea>
      </${T}>
      <fieldset class="field">
        <legend>Networks</legend>
        ${c.length===0&&l`<small class="muted">None yet (see Networks).</small>`}
        ${c.map(m=>l`<label class="check"><input type="checkbox"
          checked=${o.networks.includes(m.id)} onChange=${()=>i(m.id)} /> ${m.name}</label>`)}
      </fieldset>
      <${T} label="Disk" id="create-disk">
        <select id="create-disk" value=${o.disk} onChange=${r("disk")}>
          <option value="">none</option>
          ${p.map(m=>l`<option value=${m.id}>${m.name} (${m.kind})</option>`)}
        </select>
      </${T}>
      ${o.disk&&l`<${T} label="Mount path" id="create-mount">
        <input id="create-mount" value=${o.mount} onInput=${r("mount")} required />
      </${T}>`}
    </div>
    <button type="submit" disabled=${a.busy}>${a.busy?"Creating\u2026":"Create sandbox"}</button>
    <${$} error=${a.error} />
  </form>`}function Zt(){let e=k(async()=>{let a=new Date(Date.now()-9e5).toISOString();return E(`/v1/metrics/timeseries?since=${g(a)}`)},[],5e3);if(!e.data)return l`<${$} error=${e.error} />`;let t=e.data.samples,o=t.map(a=>new Date(a.timestamp)),n=a=>a==null?"\u2013":`${a.toFixed(0)} %`;return l`<details class="card" open=${t.length>0}>
    <summary>Your usage, the last 15 minutes</summary>
    <div class="charts">
      <${z} title="CPU (100 % = one vCPU)" format=${n} times=${o}
        series=${[{label:"used",className:"a",values:t.map(a=>a.cpu_used_pct)}]} />
      <${z} title="Memory" format=${F} times=${o}
        series=${[{label:"used",className:"a",values:t.map(a=>a.mem_used_bytes)}]} />
      <${z} title="Running sandboxes" format=${a=>(a??"\u2013").toString()} times=${o}
        series=${[{label:"running",className:"b",values:t.map(a=>a.sandboxes)}]} />
    </div>
  </details>`}function gt(){let e=k(()=>L("/v1/sandboxes"),[],1e4),[t,o]=_(!1);return re(()=>e.reload()),l`<section aria-labelledby="sandboxes-title">
    <div class="title-row">
      <h2 id="sandboxes-title">Sandboxes</h2>
      <button type="button" aria-expanded=${t} onClick=${()=>o(!t)}>
        ${t?"Close the form":"New sandbox"}</button>
    </div>
    ${t&&l`<${Qt} onCreated=${n=>{o(!1),U("sandboxes",n.id)}} />`}
    <${$} error=${e.error} />
    ${e.loading&&!e.data?l`<${D} what="sandboxes" />`:null}
    ${e.data&&e.data.length===0&&l`<p class="muted">No sandboxes yet.</p>`}
    ${e.data&&e.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Your sandboxes</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Shape</th>
        <th scope="col">Image</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${e.data.map(n=>l`<tr key=${n.id} data-sandbox=${n.id}>
        <td><a href=${`#/sandboxes/${g(n.id)}`}>${n.name||n.id}</a><br /><small class="muted">${n.id}</small></td>
        <td><${V} value=${n.status} /></td>
        <td>${n.shape}</td><td>${n.rootfs}</td><td>${N(n.created_at)}</td>
        <td><${Ae} sandbox=${n} onChanged=${e.reload} /></td>
      </tr>`)}</tbody>
    </table></div>`}
    <${Zt} />
  </section>`}var eo=()=>Promise.all([import("./xterm-OAVHNYSL.js"),import("./addon-fit-SKPEDABC.js")]);function vt({sandbox:e}){let t=X(null),[o,n]=_("starting"),[a,r]=_(null),[s,u]=_(0);return O(()=>{let d=`/v1/sandboxes/${g(e.id)}/processes`,c=new TextEncoder,p=null,h=null,i=null,f=null,m=!1,b=x=>i?.readyState===WebSocket.OPEN&&i.send(x),y=()=>h?.fit();return(async()=>{try{let[{Terminal:x},{FitAddon:v}]=await eo();if(m)return;if(p=new x({cursorBlink:!0,fontSize:14,scrollback:5e3}),h=new v,p.loadAddon(h),p.open(t.current),h.fit(),p.onData(A=>b(c.encode(A))),p.onResize(({rows:A,cols:M})=>b(JSON.stringify({type:"resize",rows:A,cols:M}))),window.addEventListener("resize",y),f=(await w("POST",d,{body:{pty:{rows:p.rows,cols:p.cols}}})).process_id,m){G("DELETE",`${d}/${g(f)}?grace_ms=500`).catch(()=>{});return}i=new WebSocket(mt(`${d}/${g(f)}/ws`),ft()),i.binaryType="arraybuffer",i.onopen=()=>{n("connected"),p.focus()},i.onmessage=A=>{if(typeof A.data!="string"){p.write(new Uint8Array(A.data));return}let M=JSON.parse(A.data);M.type==="exit"&&(p.write(`\r
[the shell exited: ${M.exit_code}]\r
`),n("exited"))},i.onclose=()=>!m&&n(A=>A==="exited"?A:"closed")}catch(x){if(m)return;r(x),n("failed")}})(),()=>{m=!0,window.removeEventListener("resize",y),p?.dispose();let x=()=>{i.send(JSON.stringify({type:"signal",signal:"SIGHUP"})),i.close()};i?.readyState===WebSocket.OPEN?x():i?.readyState===WebSocket.CONNECTING&&(i.onopen=x)}},[e.id,s]),l`<div>
    <div class="title-row">
      <p class="muted" aria-live="polite">Terminal: <span data-testid="terminal-state">${o}</span></p>
      ${(o==="exited"||o==="closed"||o==="failed")&&l`<button type="button" onClick=${()=>{r(null),n("starting"),u(s+1)}}>
          New terminal</button>`}
    </div>
    <${$} error=${a} />
    <div class="console-terminal" ref=${t} role="region" aria-label="Terminal"></div>
  </div>`}function Oe(e,t){return e.endsWith("/")?e+t:`${e}/${t}`}function to(e){return e.replace(/\/+$/,"").split("/").slice(0,-1).join("/")||"/"}async function oo(e,t){let o=await w("POST",`/v1/sandboxes/${g(e.id)}/exec`,{body:{cmd:"find",args:[t,"-mindepth","1","-maxdepth","1","-printf","%y\\t%s\\t%f\\n"]}});if(o.result.exit_code!==0){let n=(o.result.stderr||o.result.error||"").trim();throw new Error(n||`cannot list ${t}`)}return o.result.stdout.split(`
`).filter(Boolean).map(n=>{let[a,r,...s]=n.split("	");return{type:a,size:Number(r),name:s.join("	")}}).sort((n,a)=>(n.type==="d"?0:1)-(a.type==="d"?0:1)||n.name.localeCompare(a.name))}function yt({sandbox:e}){let[t,o]=_("/tmp"),[n,a]=_("/tmp"),r=k(()=>oo(e,t),[e.id,t]),s=P(),[u,d]=_(""),c=i=>{o(i),a(i)},p=i=>{let f=Array.from(i.target.files||[]);i.target.value="",s.run(async()=>{for(let m of f){let b=Oe(t,m.name);await G("PUT",`/v1/sandboxes/${g(e.id)}/files?path=${g(b)}`,{raw:m})}d(`Uploaded ${f.map(m=>m.name).join(", ")}`),r.reload()})},h=i=>s.run(async()=>{let f=Oe(t,i),m=await G("GET",`/v1/sandboxes/${g(e.id)}/files?path=${g(f)}`),b=URL.createObjectURL(await m.blob()),y=document.createElement("a");y.href=b,y.download=i,document.body.append(y),y.click(),y.remove(),setTimeout(()=>URL.revokeObjectURL(b),1e4),d(`Downloaded ${i}`)});return l`<div>
    <form class="inline" onSubmit=${i=>{i.preventDefault(),c(n.trim()||"/")}}>
      <label for="files-dir">Folder</label>
      <input id="files-dir" value=${n} onInput=${i=>a(i.target.value)} />
      <button type="submit">Open</button>
      <button type="button" onClick=${()=>c(to(t))} disabled=${t==="/"}>Up</button>
      <label class="upload">Upload to this folder
        <input type="file" multiple onChange=${p} disabled=${s.busy} /></label>
    </form>
    <p class="muted" aria-live="polite">${s.busy?"Working\u2026":u}</p>
    <${$} error=${s.error||r.error} />
    ${r.loading&&l`<${D} what=${t} />`}
    ${r.data&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Files in ${t}</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Size</th><th scope="col">Action</th></tr></thead>
      <tbody>
        ${r.data.length===0&&l`<tr><td colspan="3" class="muted">Empty folder.</td></tr>`}
        ${r.data.map(i=>l`<tr key=${i.name} data-file=${i.name}>
          <td>${i.type==="d"?l`<button type="button" class="link" onClick=${()=>c(Oe(t,i.name))}>${i.name}/</button>`:i.name}</td>
          <td>${i.type==="d"?"folder":F(i.size)}</td>
          <td>${i.type==="f"&&l`<button type="button" aria-label=${`Download ${i.name}`}
            onClick=${()=>h(i.name)}>Download</button>`}</td>
        </tr>`)}
      </tbody>
    </table></div>`}
  </div>`}var wt=e=>`hutch.exec.${e}`;function xt(e){try{return JSON.parse(sessionStorage.getItem(wt(e))||"[]")}catch{return[]}}function kt({sandbox:e}){let[t,o]=_(""),[n,a]=_(()=>xt(e.id)),r=P(),s=k(async()=>(await E(`/v1/sandboxes/${g(e.id)}/processes`)).processes,[e.id],5e3);return l`<div>
    <form class="inline" onSubmit=${d=>{d.preventDefault();let c=t.trim();c&&r.run(async()=>{let p=new Date().toISOString(),h=await w("POST",`/v1/sandboxes/${g(e.id)}/exec`,{body:{cmd:c}}),f=[{cmd:c,at:p,ms:h.exec_ms,...h.result},...xt(e.id)].slice(0,50);sessionStorage.setItem(wt(e.id),JSON.stringify(f)),a(f),o("")})}}>
      <label for="exec-cmd">Command</label>
      <input id="exec-cmd" class="grow" value=${t} onInput=${d=>o(d.target.value)}
        placeholder="uname -a" autocomplete="off" />
      <button type="submit" disabled=${r.busy}>${r.busy?"Running\u2026":"Run"}</button>
    </form>
    <${$} error=${r.error} />
    <h3>What this console ran</h3>
    ${n.length===0&&l`<p class="muted">Nothing yet in this tab.</p>`}
    <ol class="history">${n.map(d=>l`<li class="card">
      <p><code>${d.cmd}</code> <span class="muted">${N(d.at)}, ${d.ms} ms, exit ${d.exit_code??d.error}</span></p>
      ${d.stdout&&l`<pre class="out">${d.stdout}</pre>`}
      ${d.stderr&&l`<pre class="out err">${d.stderr}</pre>`}
    </li>`)}</ol>
    <h3>Processes</h3>
    <${$} error=${s.error} />
    ${s.data&&l`<div class="table-wrap"><table>
      <caption class="sr-only">The sandbox's managed processes</caption>
      <thead><tr><th scope="col">Command</th><th scope="col">Kind</th><th scope="col">State</th>
        <th scope="col">Started</th><th scope="col">Exit</th></tr></thead>
      <tbody>${s.data.map(d=>l`<tr key=${d.process_id}>
        <td><code>${[d.cmd,...d.args].join(" ")}</code></td><td>${d.kind}</td><td>${d.state}</td>
        <td>${N(d.created_at)}</td><td>${d.exit_code??"\u2013"}</td></tr>`)}</tbody>
    </table></div>`}
  </div>`}var no=e=>e==null?"\u2013":`${e.toFixed(1)} %`,Le=e=>F(e);function St(e,t,o){return e.map((n,a)=>{if(a===0||n[t]===null||e[a-1][t]===null)return null;let r=(o[a]-o[a-1])/1e3,s=n[t]-e[a-1][t];return r>0&&s>=0?s/r:null})}function Tt({sandbox:e}){let[t,o]=_(null),[n,a]=_(null);if(O(()=>{let d=null,c=!0,p=async()=>{try{let h=new Date(Date.now()-9e5).toISOString(),i=await E(`/v1/sandboxes/${g(e.id)}/metrics/timeseries?since=${g(h)}`);if(!c)return;o(i),a(null),d=setTimeout(p,Math.max(1e3,Math.min(1e4,i.interval_s*1e3)))}catch(h){if(!c)return;a(h),d=setTimeout(p,1e4)}};return p(),()=>{c=!1,clearTimeout(d)}},[e.id]),!t)return l`<div><${$} error=${n} /><p class="muted">Loading metrics…</p></div>`;let r=t.samples,s=r.map(d=>new Date(d.timestamp)),u=r[r.length-1];return l`<div>
    <${$} error=${n} />
    <p class="muted">Sampled every ${t.interval_s} s; the last 15 minutes.
      ${r.length===0&&" No samples yet: the sandbox has not been running through a sampling round."}</p>
    <div class="charts">
      <${z} title="CPU" format=${no} max=${100} times=${s}
        series=${[{label:"used",className:"a",values:r.map(d=>d.cpu_used_pct)}]} />
      <${z} title="Memory" format=${Le} times=${s}
        max=${u?.mem_total_bytes??void 0}
        series=${[{label:"used",className:"a",values:r.map(d=>d.mem_used_bytes)}]} />
      <${z} title="Disk" format=${Le} times=${s}
        max=${u?.disk_total_bytes??void 0}
        series=${[{label:"used",className:"a",values:r.map(d=>d.disk_used_bytes)}]} />
      <${z} title="Network" format=${d=>`${Le(d)}/s`} times=${s}
        series=${[{label:"received",className:"a",values:St(r,"net_rx_bytes",s)},{label:"sent",className:"b",values:St(r,"net_tx_bytes",s)}]} />
    </div>
    ${u&&l`<p>Processes: ${u.processes}; vCPUs: ${u.cpu_count}.</p>`}
  </div>`}function Et({sandbox:e}){let t=`/v1/sandboxes/${g(e.id)}`,o=k(()=>E(`${t}/egress`),[e.id]),n=k(()=>E(`${t}/bandwidth`),[e.id],5e3),[a,r]=_(""),[s,u]=_(""),d=P();O(()=>{o.data&&r((o.data.egress||[]).join(`
`))},[o.data]);let c=h=>{h.preventDefault(),d.run(async()=>{let i=a.split(`
`).map(m=>m.trim()).filter(Boolean),f=await w("PUT",`${t}/egress`,{body:{egress:i}});r(f.egress.join(`
`)),u(`Saved ${f.egress.length} rule(s).`)})},p=n.data;return l`<div class="two">
    <form class="card" onSubmit=${c}>
      <h3>Egress rules</h3>
      ${o.loading&&l`<${D} what="the rules" />`}
      <label for="egress-rules">Rules, one a line</label>
      <textarea id="egress-rules" rows="8" value=${a} onInput=${h=>r(h.target.value)}
        aria-describedby="egress-help"></textarea>
      <small id="egress-help" class="muted">A domain (example.com, *.example.com), an address or
        CIDR, with :port; "*" is open; none: the server's default. Applied live.</small>
      <button type="submit" disabled=${d.busy||e.status==="destroyed"}>Save rules</button>
      <p class="muted" aria-live="polite">${s}</p>
      <${$} error=${d.error||o.error} />
    </form>
    <section class="card" aria-labelledby="bw-title">
      <h3 id="bw-title">Bandwidth</h3>
      <${$} error=${n.error} />
      ${p&&l`<dl class="facts">
        <div><dt>Quota</dt><dd>${p.quota_bytes<0?"unmetered":F(p.quota_bytes)}</dd></div>
        <div><dt>Used (out)</dt><dd>${F(p.used_bytes)}</dd></div>
        <div><dt>In</dt><dd>${F(p.ingress_bytes)}</dd></div>
        <div><dt>Remaining</dt><dd>${p.remaining_bytes<0?"\u2013":F(p.remaining_bytes)}</dd></div>
        <div><dt>Capped</dt><dd>${p.capped?"yes: out of quota":"no"}</dd></div>
      </dl>`}
    </section>
  </div>`}var ro=[{id:"terminal",label:"Terminal"},{id:"files",label:"Files"},{id:"commands",label:"Commands"},{id:"metrics",label:"Metrics"},{id:"egress",label:"Egress and bandwidth"}];function ao({tab:e,sandbox:t}){return e==="files"?l`<${yt} sandbox=${t} />`:e==="commands"?l`<${kt} sandbox=${t} />`:e==="metrics"?l`<${Tt} sandbox=${t} />`:e==="egress"?l`<${Et} sandbox=${t} />`:l`<${vt} sandbox=${t} />`}function Ct({id:e,tab:t}){let o=k(()=>E(`/v1/sandboxes/${g(e)}`),[e]);if(re(r=>r.subject_id===o.data?.id&&o.reload(),`&subject_id=${g(e)}`),o.error&&o.error.status===404)return l`<section><h2>Sandbox not found</h2>
      <p role="alert">There is no sandbox <code>${e}</code> of yours.</p>
      <p><a href="#/sandboxes">Back to your sandboxes</a></p></section>`;if(!o.data)return o.error?l`<${$} error=${o.error} />`:l`<${D} what="the sandbox" />`;let n=o.data,a=[["Id",n.id],["IP",n.ip||"\u2013"],["Shape",`${n.shape} (${n.vcpu} vCPU, ${n.mem_mib} MiB, ${n.disk_mib} MiB disk)`],["Image",n.rootfs],["Runtime",n.runtime],["Created",N(n.created_at)],["Forked from",n.forked_from||"\u2013"]];return l`<section aria-labelledby="sandbox-title">
    <p><a href="#/sandboxes">← Sandboxes</a></p>
    <div class="title-row">
      <h2 id="sandbox-title">${n.name||n.id}</h2>
      <${V} value=${n.status} />
      <${Ae} sandbox=${n} onChanged=${o.reload} onDeleted=${()=>U("sandboxes")} />
    </div>
    ${n.reason&&l`<p class="problem">${n.reason}</p>`}
    <dl class="facts">${a.map(([r,s])=>l`<div><dt>${r}</dt><dd>${s}</dd></div>`)}</dl>
    <${$t} label="Sandbox views" tabs=${ro} current=${t}
      onSelect=${r=>U("sandboxes",e,r)} />
    <div class="panel" role="tabpanel" id=${`panel-${t}`} aria-labelledby=${`tab-${t}`}>
      ${n.status==="running"||t==="metrics"||t==="egress"?l`<${ao} key=${t} tab=${t} sandbox=${n} />`:l`<p class="muted">The sandbox is ${n.status}; resume it to use this.</p>`}
    </div>
  </section>`}function ge({list:e,what:t}){return l`<${$} error=${e.error} />
    ${e.loading&&l`<${D} what=${t} />`}
    ${e.data&&e.data.length===0&&l`<p class="muted">No ${t} yet.</p>`}`}function Nt(){let e=k(()=>L("/v1/networks"),[],1e4),[t,o]=_(""),n=P();return l`<section aria-labelledby="networks-title">
    <h2 id="networks-title">Networks</h2>
    <p class="muted">Sandboxes in one network reach each other by name; attach them at create.</p>
    <form class="inline" onSubmit=${r=>{r.preventDefault(),n.run(async()=>{await w("POST","/v1/networks",{body:{name:t.trim()}}),o(""),e.reload()})}}>
      <label for="network-name">New network</label>
      <input id="network-name" value=${t} onInput=${r=>o(r.target.value)} required maxlength="63" />
      <button type="submit" disabled=${n.busy}>Create network</button>
    </form>
    <${$} error=${n.error} />
    <${ge} list=${e} what="networks" />
    ${e.data&&e.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Your networks</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Members</th>
        <th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${e.data.map(r=>l`<tr key=${r.id}>
        <td>${r.name}</td><td><code>${r.id}</code></td><td>${r.member_count}</td><td>${N(r.created_at)}</td>
        <td><${j} label="Delete" confirm=${`Delete ${r.name}`}
          onConfirm=${()=>n.run(async()=>{await w("DELETE",`/v1/networks/${g(r.id)}`),e.reload()})} /></td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`}function It(){let e=k(()=>L("/v1/disks"),[],1e4),t=P();return l`<section aria-labelledby="disks-title">
    <h2 id="disks-title">Disks</h2>
    <p class="muted">S3-compatible buckets mounted into sandboxes. Register one with
      <code>POST /v1/disks</code> (its credentials are sealed and never shown); attach it at create.</p>
    <${$} error=${t.error} />
    <${ge} list=${e} what="disks" />
    ${e.data&&e.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Your disks</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Bucket</th>
        <th scope="col">Endpoint</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${e.data.map(o=>l`<tr key=${o.id}>
        <td>${o.name}</td><td>${o.kind}</td><td>${o.config.bucket}</td><td>${o.config.endpoint}</td>
        <td>${N(o.created_at)}</td>
        <td><${j} label="Delete" confirm=${`Delete ${o.name}`}
          onConfirm=${()=>t.run(async()=>{await w("DELETE",`/v1/disks/${g(o.id)}`),e.reload()})} /></td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`}function Dt({me:e}){let t=B.key()||"",o=k(()=>w("GET","/v1/api-keys"),[],1e4),[n,a]=_(null),r=P(),s=()=>r.run(async()=>{a(await w("POST","/v1/api-keys")),o.reload()}),u=d=>r.run(async()=>{await w("DELETE",`/v1/api-keys/${g(d.id)}`),o.reload()});return l`<section aria-labelledby="keys-title">
    <h2 id="keys-title">API keys</h2>
    <p>You are <strong>${e.user_id}</strong>, with the key <code>${t.slice(0,8)}…</code> in this tab.
      A key is shown once, when it is made; a revoked key is refused from its next request.</p>
    <dl class="facts">
      <div><dt>Running</dt><dd>${e.stats.running}</dd></div><div><dt>Paused</dt><dd>${e.stats.paused}</dd></div>
      <div><dt>Other</dt><dd>${e.stats.other}</dd></div><div><dt>Ever</dt><dd>${e.stats.total}</dd></div>
    </dl>
    <button type="button" onClick=${s} disabled=${r.busy}>Make a new key</button>
    ${n&&l`<p role="status" class="secret">Your new key (copy it now; it is not shown again):
      <code data-testid="new-key">${n.key}</code></p>`}
    <${$} error=${r.error} />
    <${ge} list=${o} what="keys" />
    ${o.data&&o.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Your API keys</caption>
      <thead><tr><th scope="col">Prefix</th><th scope="col">Id</th><th scope="col">Created</th>
        <th scope="col">Last used</th><th scope="col">Revoked</th><th scope="col">Actions</th></tr></thead>
      <tbody>${o.data.map(d=>l`<tr key=${d.id}>
        <td><code>${d.prefix}…</code>${t.startsWith(d.prefix)?" (this tab)":""}</td>
        <td><code>${d.id}</code></td><td>${N(d.created_at)}</td><td>${N(d.last_used_at)}</td>
        <td>${d.revoked_at?N(d.revoked_at):"\u2013"}</td>
        <td>${!d.revoked_at&&l`<${j} label="Revoke" confirm=${`Revoke ${d.prefix}\u2026`}
          onConfirm=${()=>u(d)} />`}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`}function Pt(){let e=k(()=>L("/v1/hosts"),[],1e4);return l`<section aria-labelledby="hosts-title">
    <h2 id="hosts-title">Hosts</h2>
    <${ge} list=${e} what="hosts" />
    ${e.data&&e.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">The hosts of this hutch</caption>
      <thead><tr><th scope="col">Host</th><th scope="col">Status</th><th scope="col">Sandboxes</th>
        <th scope="col">Free memory</th><th scope="col">Runtimes</th><th scope="col">Images</th>
        <th scope="col">Labels</th></tr></thead>
      <tbody>${e.data.map(t=>l`<tr key=${t.id}>
        <td>${t.id}</td><td>${t.status}</td><td>${t.vm_count}</td><td>${t.free_mib} MiB</td>
        <td>${(t.runtimes||[]).join(", ")}</td><td>${t.rootfses.join(", ")}</td>
        <td>${Object.entries(t.labels||{}).map(([o,n])=>`${o}=${n}`).join(", ")||"\u2013"}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`}var so=`FROM devbox:1
RUN echo hello from the build > /hello.txt
`;function io(){let[e,t]=_(""),[o,n]=_(so),a=P();return l`<form class="card" onSubmit=${s=>{s.preventDefault(),a.run(async()=>{let u=await w("POST","/v1/templates",{body:{name:e.trim(),dockerfile:o}});U("templates",u.id)})}} aria-labelledby="build-title">
    <h3 id="build-title">Build a template</h3>
    <${T} label="Name" id="template-name">
      <input id="template-name" value=${e} onInput=${s=>t(s.target.value)} required maxlength="63" />
    </${T}>
    <${T} label="Dockerfile" id="template-dockerfile">
      <textarea id="template-dockerfile" rows="6" class="code" value=${o}
        onInput=${s=>n(s.target.value)} required></textarea>
    </${T}>
    <button type="submit" disabled=${a.busy}>${a.busy?"Submitting\u2026":"Build"}</button>
    <${$} error=${a.error} />
  </form>`}function At(){let e=k(()=>L("/v1/templates"),[],5e3);return l`<section aria-labelledby="templates-title">
    <h2 id="templates-title">Templates</h2>
    <${io} />
    <${$} error=${e.error} />
    ${e.loading&&l`<${D} what="templates" />`}
    ${e.data&&e.data.length===0&&l`<p class="muted">No templates yet.</p>`}
    ${e.data&&e.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Your templates</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Version</th><th scope="col">Status</th>
        <th scope="col">From</th><th scope="col">Size</th><th scope="col">Created</th></tr></thead>
      <tbody>${e.data.map(t=>l`<tr key=${t.id}>
        <td><a href=${`#/templates/${g(t.id)}`}>${t.name}</a></td><td>${t.version}</td>
        <td><${V} value=${t.status} /></td><td>${t.base}</td>
        <td>${t.ext4_size_bytes?F(t.ext4_size_bytes):"\u2013"}</td><td>${N(t.created_at)}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`}function lo({template:e,onFinal:t}){let[o,n]=_([]),[a,r]=_(null),[s,u]=_(null),d=X(null);return O(()=>{let c=new AbortController,p=[];return be(`/v1/templates/${g(e.id)}/logs?follow=true`,h=>{h.final?(r(h.status),t()):h.line!==void 0&&(p.push(h),n([...p]))},c.signal).catch(h=>h.name!=="AbortError"&&u(h)),()=>c.abort()},[e.id]),O(()=>d.current?.scrollIntoView({block:"nearest"}),[o.length]),l`<section aria-labelledby="log-title">
    <h3 id="log-title">Build log ${a?l`<span data-testid="build-final">(finished: ${a})</span>`:l`<span class="muted">(live)</span>`}</h3>
    <${$} error=${s} />
    <pre class="log" role="log" aria-label="Build log" data-testid="build-log">${o.map(c=>l`<span class=${`level-${c.level}`}>${`${c.line}
`}</span>`)}<span ref=${d}></span></pre>
  </section>`}function Ot({id:e}){let t=k(()=>E(`/v1/templates/${g(e)}?include=dockerfile`),[e]),o=P();if(t.error&&t.error.status===404)return l`<section><h2>Template not found</h2><p role="alert">No template <code>${e}</code> of yours.</p>
      <p><a href="#/templates">Back to templates</a></p></section>`;if(!t.data)return t.error?l`<${$} error=${t.error} />`:l`<${D} what="the template" />`;let n=t.data,a=n.status==="pending"||n.status==="building";return l`<section aria-labelledby="template-title">
    <p><a href="#/templates">← Templates</a></p>
    <div class="title-row">
      <h2 id="template-title">${n.name} v${n.version}</h2><${V} value=${n.status} />
      ${a&&l`<button type="button" onClick=${()=>o.run(async()=>{await w("POST",`/v1/templates/${g(n.id)}/cancel`),t.reload()})}>Cancel build</button>`}
      <${j} label="Delete" confirm=${`Delete ${n.name} v${n.version}`}
        onConfirm=${()=>o.run(async()=>{await w("DELETE",`/v1/templates/${g(n.id)}`),U("templates")})} />
    </div>
    <${$} error=${o.error} />
    ${n.reason&&l`<p class="problem">${n.reason}</p>`}
    <dl class="facts">
      <div><dt>Id</dt><dd>${n.id}</dd></div><div><dt>From</dt><dd>${n.base}</dd></div>
      <div><dt>Steps</dt><dd>${n.steps_total} (${n.steps_cached} cached)</dd></div>
      <div><dt>Built</dt><dd>${N(n.built_at)}</dd></div>
    </dl>
    <details><summary>Dockerfile</summary><pre class="out">${n.dockerfile}</pre></details>
    <${lo} template=${n} onFinal=${t.reload} />
  </section>`}function Lt({events:e,caption:t}){return l`<div class="table-wrap"><table>
    <caption class="sr-only">${t}</caption>
    <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Subject</th>
      <th scope="col">Data</th></tr></thead>
    <tbody>${e.map(o=>l`<tr key=${o.id}>
      <td>${N(o.created_at)}</td><td>${o.type}</td>
      <td>${o.type.startsWith("sandbox.")?l`<a href=${`#/sandboxes/${o.subject_id}`}>${o.subject_id}</a>`:o.subject_id}</td>
      <td><code>${JSON.stringify(o.data)}</code></td></tr>`)}</tbody>
  </table></div>`}function Rt(){let e=k(async()=>{let s=(await E("/v1/events?limit=1")).pagination?.total??0;return(await E(`/v1/events?limit=200&offset=${Math.max(0,s-200)}`)).data.reverse()},[]),[t,o]=_([]);re(r=>o(s=>[r,...s].slice(0,500)));let n=new Set(t.map(r=>r.id)),a=[...t,...(e.data||[]).filter(r=>!n.has(r.id))];return l`<section aria-labelledby="events-title">
    <h2 id="events-title">Events</h2>
    <p class="muted">Newest first; new ones appear as they happen.</p>
    <${$} error=${e.error} />
    ${e.loading&&l`<${D} what="events" />`}
    ${e.data&&l`<${Lt} events=${a} caption="Lifecycle events" />`}
  </section>`}function Ft(){let e=k(async()=>(await E("/v1/events?type=deployment.ready,deployment.failed&limit=500")).data.reverse(),[],1e4);return l`<section aria-labelledby="deploys-title">
    <h2 id="deploys-title">Deploys</h2>
    <p class="muted">Deploys are made and listed by wallet-signed requests (<code>/agent/…</code>), which an
      API key cannot sign; this list is their <code>deployment.ready</code> and <code>deployment.failed</code>
      events for your user, read-only.</p>
    <${$} error=${e.error} />
    ${e.loading&&l`<${D} what="deploys" />`}
    ${e.data&&e.data.length===0&&l`<p class="muted">No deploys yet.</p>`}
    ${e.data&&e.data.length>0&&l`<${Lt} events=${e.data} caption="Deploy events" />`}
  </section>`}var co=["sandbox.created","sandbox.forked","sandbox.running","sandbox.paused","sandbox.resumed","sandbox.error","sandbox.destroyed","template.ready","template.failed","deployment.ready","deployment.failed"];function uo({hook:e}){let t=k(async()=>(await E(`/v1/webhooks/${g(e.id)}/deliveries?limit=50`)).data,[e.id],5e3);return l`<div>
    <${$} error=${t.error} />
    ${t.loading&&l`<${D} what="deliveries" />`}
    ${t.data&&t.data.length===0&&l`<p class="muted">No deliveries yet.</p>`}
    ${t.data&&t.data.length>0&&l`<div class="table-wrap"><table>
      <caption class="sr-only">Deliveries to ${e.url}</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">State</th><th scope="col">Attempts</th>
        <th scope="col">Last answer</th><th scope="col">Next try</th><th scope="col">Created</th></tr></thead>
      <tbody>${t.data.map(o=>l`<tr key=${o.id}>
        <td>${o.event_type}</td><td>${o.state}</td><td>${o.attempts}</td>
        <td>${o.last_status??o.last_error??"\u2013"}</td><td>${N(o.next_attempt_at)}</td>
        <td>${N(o.created_at)}</td></tr>`)}</tbody>
    </table></div>`}
  </div>`}function Mt(){let e=k(()=>L("/v1/webhooks"),[]),[t,o]=_(""),[n,a]=_(""),[r,s]=_([]),[u,d]=_(null),[c,p]=_(null),h=P(),i=m=>s(r.includes(m)?r.filter(b=>b!==m):[...r,m]);return l`<section aria-labelledby="webhooks-title">
    <h2 id="webhooks-title">Webhooks</h2>
    <form class="card" onSubmit=${m=>{m.preventDefault(),h.run(async()=>{let b={url:t.trim(),events:r.length?r:["*"],description:n};d(await w("POST","/v1/webhooks",{body:b})),o(""),a(""),s([]),e.reload()})}} aria-labelledby="webhook-new">
      <h3 id="webhook-new">New webhook</h3>
      <div class="grid">
        <${T} label="URL" id="webhook-url">
          <input id="webhook-url" type="url" value=${t} onInput=${m=>o(m.target.value)} required />
        </${T}>
        <${T} label="Description" id="webhook-description">
          <input id="webhook-description" value=${n} onInput=${m=>a(m.target.value)} maxlength="256" />
        </${T}>
        <fieldset class="field"><legend>Events (none ticked: all)</legend>
          ${co.map(m=>l`<label class="check"><input type="checkbox" checked=${r.includes(m)}
            onChange=${()=>i(m)} /> ${m}</label>`)}
        </fieldset>
      </div>
      <button type="submit" disabled=${h.busy}>Add webhook</button>
      <${$} error=${h.error} />
    </form>
    ${u&&l`<p class="card" role="status">Added. Its signing secret, shown this once:
      <code data-testid="webhook-secret">${u.secret}</code></p>`}
    <${$} error=${e.error} />
    ${e.data&&e.data.length===0&&l`<p class="muted">No webhooks yet.</p>`}
    ${e.data&&e.data.length>0&&l`<ul class="history">${e.data.map(m=>l`<li class="card" key=${m.id}>
      <div class="title-row"><strong>${m.url}</strong>
        <span class="muted">${m.events.join(", ")}${m.description?` \xB7 ${m.description}`:""}</span>
        <button type="button" aria-expanded=${c===m.id}
          onClick=${()=>p(c===m.id?null:m.id)}>Deliveries</button>
        <${j} label="Delete" confirm=${`Delete the webhook to ${m.url}`}
          onConfirm=${()=>h.run(async()=>{await w("DELETE",`/v1/webhooks/${g(m.id)}`),e.reload()})} />
      </div>
      ${c===m.id&&l`<${uo} hook=${m} />`}
    </li>`)}</ul>`}
  </section>`}var po=[["sandboxes","Sandboxes"],["templates","Templates"],["networks","Networks"],["disks","Disks"],["deploys","Deploys"],["events","Events"],["webhooks","Webhooks"],["keys","API keys"],["hosts","Hosts"]];function Ut(){return location.hash.replace(/^#\/?/,"").split("/").filter(Boolean).map(decodeURIComponent)}function mo({onLogin:e,notice:t}){let[o,n]=_(""),[a,r]=_(t),[s,u]=_(!1);return l`<main class="login">
    <h1>hutch console</h1>
    <form onSubmit=${async c=>{c.preventDefault(),u(!0),r(null);try{let p=await E("/v1/whoami",{key:o.trim()});B.set(o.trim()),e(p)}catch(p){r(p.status===401?new K(401,`That key was refused: ${p.message}`):p)}finally{u(!1)}}} aria-describedby="login-help">
      <label for="api-key">API key</label>
      <input id="api-key" name="api-key" type="password" autocomplete="off" required
        value=${o} onInput=${c=>n(c.target.value)} />
      <button type="submit" disabled=${s}>${s?"Checking\u2026":"Log in"}</button>
      <p id="login-help" class="muted">Make one with <code>hutch keys create --user NAME</code>.
        It is kept in this tab only (sessionStorage) and sent as <code>X-Api-Key</code>.</p>
      <${$} error=${a} />
    </form>
  </main>`}function fo({route:e,me:t}){let[o,n,a]=e;switch(o){case"sandboxes":return n?l`<${Ct} id=${n} tab=${a||"terminal"} />`:l`<${gt} />`;case"templates":return n?l`<${Ot} id=${n} />`:l`<${At} />`;case"networks":return l`<${Nt} />`;case"disks":return l`<${It} />`;case"deploys":return l`<${Ft} />`;case"events":return l`<${Rt} />`;case"webhooks":return l`<${Mt} />`;case"keys":return l`<${Dt} me=${t} />`;case"hosts":return l`<${Pt} />`;default:return l`<section><h2>Not found</h2><p>No page <code>${e.join("/")}</code>.
        <a href="#/sandboxes">Sandboxes</a></p></section>`}}function ho(){let[e,t]=_(Ut()),[o,n]=_(null),[a,r]=_(!!B.key()),[s,u]=_(null);if(O(()=>{let p=()=>t(Ut());return window.addEventListener("hashchange",p),()=>window.removeEventListener("hashchange",p)},[]),O(()=>{B.key()&&E("/v1/whoami").then(n).catch(p=>{B.clear(),u(new K(p.status,`Logged out: ${p.message}`))}).finally(()=>r(!1))},[]),a)return l`<p class="muted">Checking your key…</p>`;if(!o)return l`<${mo} notice=${s} onLogin=${p=>{n(p),e.length||U("sandboxes")}} />`;let d=()=>{B.clear(),n(null)},c=e[0]||"sandboxes";return l`<div class="layout">
    <a class="skip" href="#main">Skip to content</a>
    <header>
      <span class="brand">hutch</span>
      <nav aria-label="Sections">
        <ul>${po.map(([p,h])=>l`<li><a href=${`#/${p}`}
          aria-current=${c===p?"page":void 0}>${h}</a></li>`)}</ul>
      </nav>
      <span class="who">Signed in as <strong data-testid="user">${o.user_id}</strong></span>
      <button type="button" onClick=${d}>Log out</button>
    </header>
    <main id="main" tabindex="-1"><${fo} route=${e.length?e:["sandboxes"]} me=${o} /></main>
  </div>`}Qe(l`<${ho} />`,document.getElementById("app"));
